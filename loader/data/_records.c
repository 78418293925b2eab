/* tagstream.loader.data._records: the per-sample work of the GPU path's record reads, in one C call a batch.
 *
 * images() looks each sample's key up in its shard's read transaction (py-lmdb's Transaction.get, so
 * LMDB's own B-tree code and error checks run), finds the image inside the record as
 * format.pack_record lays it out (a msgpack map whose first entry is "image": bin 8/16/32), checks that
 * it is a JPEG whose frame header says the index's size, and hands back a view of it (no copy), wrapped
 * by the caller's type (DALI's TensorCPU). Anything else — a missing key, another record layout, not a
 * JPEG, a header that disagrees with the index — stops the call and says which sample and why, so the
 * caller can name it (loader/data/store.py reads that sample again the slow way for the message).
 * frame_size()/first_size_mismatch() read a JPEG's frame header from its markers alone.
 *
 * No libjpeg here: the GPU path needs this module but not the CPU decoder (loader/pipeline/_jpeg.c).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The frame size of a JPEG from its markers alone: 0 and *w, *h set, or -1 when the data is not a JPEG
 * with a frame header before its first scan. ~0.1 us: cheap enough for every sample. */
static int frame_size(const uint8_t *d, size_t n, int *w, int *h) {
    if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return -1;
    size_t i = 2;
    while (i + 4 <= n) {
        if (d[i] != 0xFF) return -1;
        int m = d[i + 1];
        if (m == 0xFF) { i++; continue; }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
        if (m == 0xD9 || m == 0xDA) return -1;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (i + 9 > n) return -1;
            *h = (d[i + 5] << 8) | d[i + 6];
            *w = (d[i + 7] << 8) | d[i + 8];
            return 0;
        }
        i += 2 + (size_t)((d[i + 2] << 8) | d[i + 3]);
    }
    return -1;
}

static PyObject *py_first_size_mismatch(PyObject *self, PyObject *args) {
    PyObject *seq;
    Py_buffer wb, hb;
    if (!PyArg_ParseTuple(args, "Oy*y*", &seq, &wb, &hb)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "buffers must be a sequence");
    Py_ssize_t n = fast ? PySequence_Fast_GET_SIZE(fast) : 0, bad = -1;
    if (fast && (wb.len != n * (Py_ssize_t)sizeof(int64_t) || hb.len != n * (Py_ssize_t)sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "widths and heights must be int64 arrays as long as buffers");
        Py_CLEAR(fast);
    }
    const int64_t *ws = wb.buf, *hs = hb.buf;
    for (Py_ssize_t k = 0; fast && k < n && bad < 0; k++) {
        Py_buffer b;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, k), &b, PyBUF_SIMPLE) != 0) { Py_CLEAR(fast); break; }
        int w = -1, h = -1;
        if (frame_size(b.buf, (size_t)b.len, &w, &h) != 0 || w != ws[k] || h != hs[k]) bad = k;
        PyBuffer_Release(&b);
    }
    PyBuffer_Release(&wb);
    PyBuffer_Release(&hb);
    if (!fast) return NULL;
    Py_DECREF(fast);
    return PyLong_FromSsize_t(bad);
}

static PyObject *py_frame_size(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    int w = -1, h = -1, rc = frame_size(data.buf, (size_t)data.len, &w, &h);
    PyBuffer_Release(&data);
    if (rc != 0) return PyErr_Format(PyExc_ValueError, "JPEG has no frame header before its first scan");
    return Py_BuildValue("(ii)", w, h);
}

/* why images() stopped at a sample (format.py's RECORD_* names these for Python) */
enum { OK = 0, NO_KEY = 1, OTHER_LAYOUT = 2, NOT_JPEG = 3, FRAME_DIFFERS = 4 };

static const uint8_t IMAGE_HEAD[7] = {0x83, 0xA5, 'i', 'm', 'a', 'g', 'e'}; /* {"image": ... first, 3 entries */

/* (start, length) of the image inside a record laid out as format.pack_record writes it; -1 otherwise */
static int image_span(const uint8_t *v, size_t n, size_t *start, size_t *length) {
    if (n < 8 || memcmp(v, IMAGE_HEAD, 7) != 0) return -1;
    size_t bytes = v[7] == 0xC4 ? 1 : v[7] == 0xC5 ? 2 : v[7] == 0xC6 ? 4 : 0;
    if (!bytes || n < 8 + bytes) return -1;
    size_t len = 0;
    for (size_t i = 0; i < bytes; i++) len = (len << 8) | v[8 + i];
    if (8 + bytes + len > n) return -1;
    *start = 8 + bytes;
    *length = len;
    return 0;
}

static int int64_array(Py_buffer *b, Py_ssize_t n, const char *name) {
    if (b->len == n * (Py_ssize_t)sizeof(int64_t)) return 0;
    PyErr_Format(PyExc_ValueError, "%s must be an int64 array of one entry a sample", name);
    return -1;
}

/* One sample: the view of its image (wrapped), or NULL with *why set (and no Python error) when the
 * record is not as expected, or NULL with a Python error when get or wrap raised. */
static PyObject *one_image(PyObject *get, int64_t local, int64_t width, int64_t height, PyObject *wrap, int *why) {
    uint8_t key[8];
    for (int i = 0; i < 8; i++) key[i] = (uint8_t)((uint64_t)local >> (56 - 8 * i));
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, 8);
    if (!k) return NULL;
    PyObject *value = PyObject_CallOneArg(get, k);
    Py_DECREF(k);
    if (!value) return NULL;
    if (value == Py_None) { Py_DECREF(value); *why = NO_KEY; return NULL; }
    Py_buffer b;
    if (PyObject_GetBuffer(value, &b, PyBUF_SIMPLE) != 0) { Py_DECREF(value); return NULL; }
    size_t start = 0, length = 0;
    int w = -1, h = -1;
    if (image_span(b.buf, (size_t)b.len, &start, &length) != 0) *why = OTHER_LAYOUT;
    else if (length < 2 || ((uint8_t *)b.buf)[start] != 0xFF || ((uint8_t *)b.buf)[start + 1] != 0xD8) *why = NOT_JPEG;
    else if (frame_size((uint8_t *)b.buf + start, length, &w, &h) != 0 || w != width || h != height) *why = FRAME_DIFFERS;
    PyBuffer_Release(&b);
    if (*why != OK) { Py_DECREF(value); return NULL; }
    PyObject *view = PySequence_GetSlice(value, (Py_ssize_t)start, (Py_ssize_t)(start + length));
    Py_DECREF(value);
    if (!view || wrap == Py_None) return view;
    PyObject *wrapped = PyObject_CallOneArg(wrap, view);
    Py_DECREF(view);
    return wrapped;
}

static PyObject *py_images(PyObject *self, PyObject *args) {
    PyObject *gets, *wrap;
    Py_buffer sb, lb, wb, hb;
    if (!PyArg_ParseTuple(args, "O!y*y*y*y*O", &PyList_Type, &gets, &sb, &lb, &wb, &hb, &wrap)) return NULL;
    Py_ssize_t n = sb.len / (Py_ssize_t)sizeof(int64_t), stop = -1;
    int why = OK;
    PyObject *out = NULL;
    if (int64_array(&sb, n, "slots") || int64_array(&lb, n, "locals") || int64_array(&wb, n, "widths") || int64_array(&hb, n, "heights"))
        goto done;
    out = PyList_New(n);
    const int64_t *slots = sb.buf, *locals = lb.buf, *ws = wb.buf, *hs = hb.buf;
    for (Py_ssize_t i = 0; out && i < n; i++) {
        if (slots[i] < 0 || slots[i] >= PyList_GET_SIZE(gets)) {
            PyErr_SetString(PyExc_IndexError, "a slot names no read transaction");
            Py_CLEAR(out);
            break;
        }
        PyObject *item = one_image(PyList_GET_ITEM(gets, slots[i]), locals[i], ws[i], hs[i], wrap, &why);
        if (!item) {
            Py_CLEAR(out);
            if (why != OK) stop = i;
            break;
        }
        PyList_SET_ITEM(out, i, item);
    }
done:
    PyBuffer_Release(&sb);
    PyBuffer_Release(&lb);
    PyBuffer_Release(&wb);
    PyBuffer_Release(&hb);
    if (stop >= 0) return Py_BuildValue("(Oni)", Py_None, stop, why);
    if (!out) return NULL;
    return Py_BuildValue("(Nni)", out, (Py_ssize_t)-1, OK);
}

static PyMethodDef methods[] = {
    {"frame_size", py_frame_size, METH_VARARGS, "frame_size(data) -> (width, height) from the JPEG's markers (no decoding); ValueError if none."},
    {"first_size_mismatch", py_first_size_mismatch, METH_VARARGS,
     "first_size_mismatch(buffers, widths, heights) -> the first k whose JPEG frame is not widths[k] x heights[k] "
     "(int64 arrays), or -1."},
    {"images", py_images, METH_VARARGS,
     "images(gets, slots, locals, widths, heights, wrap) -> (items, -1, 0), or (None, k, why) when sample k is not "
     "as expected (why: 1 no such key, 2 another record layout, 3 not a JPEG, 4 frame header not widths[k] x heights[k]). "
     "Sample i is key locals[i] read with gets[slots[i]] (a read transaction's get); items are wrap(view of its image), "
     "or the views when wrap is None. int64 arrays, one entry a sample."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_records", "batch record reads of the GPU path", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
