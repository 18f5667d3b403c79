/*
 * Optional C accelerator for wsgiws: WebSocket payload masking (RFC 6455 5.3),
 * and the size of an upgrade request's headers (the max_request_headers limit).
 *
 * wsgiws works without it (wsgiws.frames and wsgiws.limits fall back to
 * pure-Python versions, the reference for what these do); setup.py builds it
 * when a C compiler is available, unless WSGIWS_NO_EXTENSIONS=1 is set.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Inputs at least this long are masked with the GIL released. */
#define NOGIL_THRESHOLD 65536

static void
xor_mask(const unsigned char *src, unsigned char *dst, Py_ssize_t n,
         const unsigned char key[4])
{
    unsigned char pattern[8];
    uint64_t k64;
    Py_ssize_t i = 0;

    memcpy(pattern, key, 4);
    memcpy(pattern + 4, key, 4);
    memcpy(&k64, pattern, 8); /* the key in memory order, whatever the endianness */

    /* memcpy to and from a local word: unaligned-safe, compiled to plain loads. */
    for (; i + 32 <= n; i += 32) {
        uint64_t a, b, c, d;
        memcpy(&a, src + i, 8);
        memcpy(&b, src + i + 8, 8);
        memcpy(&c, src + i + 16, 8);
        memcpy(&d, src + i + 24, 8);
        a ^= k64;
        b ^= k64;
        c ^= k64;
        d ^= k64;
        memcpy(dst + i, &a, 8);
        memcpy(dst + i + 8, &b, 8);
        memcpy(dst + i + 16, &c, 8);
        memcpy(dst + i + 24, &d, 8);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t a;
        memcpy(&a, src + i, 8);
        a ^= k64;
        memcpy(dst + i, &a, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

static int
get_key(PyObject *mask_obj, unsigned char key[4])
{
    Py_buffer mask;
    if (PyObject_GetBuffer(mask_obj, &mask, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (mask.len != 4) {
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return -1;
    }
    memcpy(key, mask.buf, 4);
    PyBuffer_Release(&mask);
    return 0;
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, mask, /) -> bytes\n\n"
"XOR a bytes-like ``data`` with the 4-byte ``mask`` repeated; return new bytes.");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    unsigned char key[4];
    PyObject *result;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "apply_mask() takes exactly 2 arguments (data, mask)");
        return NULL;
    }
    if (get_key(args[1], key) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        if (data.len >= NOGIL_THRESHOLD) {
            Py_BEGIN_ALLOW_THREADS
            xor_mask((const unsigned char *)data.buf, dst, data.len, key);
            Py_END_ALLOW_THREADS
        }
        else {
            xor_mask((const unsigned char *)data.buf, dst, data.len, key);
        }
    }
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(request_header_bytes_doc,
"request_header_bytes(environ, /) -> int\n\n"
"len(QUERY_STRING) plus, for every ``HTTP_*`` key, len(key) + len(str(value)).");

/* key.startswith("HTTP_"), for a str of any kind */
static int
has_header_prefix(PyObject *key)
{
    static const char prefix[] = "HTTP_";
    Py_ssize_t i;
    int kind = PyUnicode_KIND(key);
    const void *data = PyUnicode_DATA(key);

    if (PyUnicode_GET_LENGTH(key) < 5) {
        return 0;
    }
    for (i = 0; i < 5; i++) {
        if (PyUnicode_READ(kind, data, i) != (Py_UCS4)prefix[i]) {
            return 0;
        }
    }
    return 1;
}

/* Every upgrade request pays this scan of its environ (some 30 keys): in Python it
 * costs more than the rest of the admission. */
static PyObject *
request_header_bytes(PyObject *module, PyObject *environ)
{
    Py_ssize_t pos = 0, size = 0;
    PyObject *key, *value;

    if (!PyDict_Check(environ)) {
        PyErr_SetString(PyExc_TypeError, "request_header_bytes() needs a dict");
        return NULL;
    }
    while (PyDict_Next(environ, &pos, &key, &value)) {
        Py_ssize_t n;
        if (!PyUnicode_Check(key)) {
            continue; /* not a CGI variable (PEP 3333 keys are str) */
        }
#if PY_VERSION_HEX < 0x030C0000
        /* (a string made by the legacy wchar_t API has no kind or length until then) */
        if (PyUnicode_READY(key) < 0 || (PyUnicode_Check(value) && PyUnicode_READY(value) < 0)) {
            return NULL;
        }
#endif
        if (has_header_prefix(key)) {
            size += PyUnicode_GET_LENGTH(key);
        }
        else if (PyUnicode_GET_LENGTH(key) != 12
                 || PyUnicode_CompareWithASCIIString(key, "QUERY_STRING") != 0) {
            continue;
        }
        if (PyUnicode_Check(value)) {
            n = PyUnicode_GET_LENGTH(value);
        }
        else {
            PyObject *text;
            Py_INCREF(value); /* borrowed from the dict, which str() could change */
            text = PyObject_Str(value);
            Py_DECREF(value);
            if (text == NULL) {
                return NULL;
            }
            n = PyUnicode_GET_LENGTH(text);
            Py_DECREF(text);
        }
        size += n;
    }
    return PyLong_FromSsize_t(size);
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {"request_header_bytes", (PyCFunction)request_header_bytes, METH_O, request_header_bytes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef_Slot speedups_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "wsgiws._speedups",
    "Optional C accelerator for wsgiws (payload masking, request header size).",
    0,
    speedups_methods,
    speedups_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
