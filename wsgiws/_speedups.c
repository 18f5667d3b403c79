/*
 * Optional C accelerator for wsgiws: WebSocket payload masking (RFC 6455 5.3).
 *
 * wsgiws works without it (wsgiws.protocol falls back to a pure-Python
 * version); setup.py builds it when a C compiler is available, unless
 * WSGIWS_NO_EXTENSIONS=1 is set.
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

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
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
    "Optional C accelerator for wsgiws (payload masking).",
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
