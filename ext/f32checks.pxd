# Per-call checks of float32 (n, columns) kernel inputs and outputs, shared by the kernels that step
# float32 spike/current rows (neurons, l2mu). Cimported by plain name (`from f32checks cimport ...`),
# like neurons.pxd, because the sources live in ext/ and the modules in spikeline._ext.
# Their messages are the references' (spikeline.kernels.ref_neurons), so both backends fail alike.

cimport numpy as cnp
from libc.stdint cimport uintptr_t


cdef inline cnp.ndarray _input(object x, Py_ssize_t n_cols, Py_ssize_t n_rows, str shape_desc):
    """Validate x for one call. n_rows < 0: any number of rows."""
    if not cnp.PyArray_Check(x):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    cdef cnp.ndarray xa = <cnp.ndarray>x
    if cnp.PyArray_TYPE(xa) != cnp.NPY_FLOAT or not cnp.PyArray_ISNOTSWAPPED(xa):
        raise TypeError(f"x must have dtype float32 in native byte order, got {x.dtype}")
    if cnp.PyArray_NDIM(xa) != 2:
        raise ValueError(f"x must be 2-D with shape {shape_desc}, got shape {x.shape}")
    if cnp.PyArray_DIM(xa, 1) != n_cols or (n_rows >= 0 and cnp.PyArray_DIM(xa, 0) != n_rows):
        raise ValueError(f"x must have shape {shape_desc}, got {x.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(xa):
        raise ValueError("x must be C-contiguous; pass np.ascontiguousarray(x)")
    if not cnp.PyArray_ISALIGNED(xa):
        raise ValueError("x must be aligned; pass a copy, e.g. x.copy()")
    return xa


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    cdef uintptr_t a0 = <uintptr_t>cnp.PyArray_DATA(a)
    cdef uintptr_t b0 = <uintptr_t>cnp.PyArray_DATA(b)
    return a0 < b0 + <uintptr_t>cnp.PyArray_NBYTES(b) and b0 < a0 + <uintptr_t>cnp.PyArray_NBYTES(a)


cdef inline cnp.ndarray _output(object out, str name, cnp.ndarray xa, Py_ssize_t n_cols, bint in_place):
    """Validate an output (rows of x, n_cols) float32 for one call; None: allocate one.

    in_place: it may be x itself (same buffer and shape); otherwise it must not overlap x at all.
    """
    cdef cnp.npy_intp dims[2]
    dims[0] = cnp.PyArray_DIM(xa, 0)
    dims[1] = n_cols
    if out is None:
        return cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT, 0)
    if not cnp.PyArray_Check(out):
        raise TypeError(f"{name} must be a numpy.ndarray or None, got {type(out).__name__}")
    cdef cnp.ndarray oa = <cnp.ndarray>out
    if cnp.PyArray_TYPE(oa) != cnp.NPY_FLOAT or not cnp.PyArray_ISNOTSWAPPED(oa):
        raise TypeError(f"{name} must have dtype float32 in native byte order, got {out.dtype}")
    if cnp.PyArray_NDIM(oa) != 2 or cnp.PyArray_DIM(oa, 0) != dims[0] or cnp.PyArray_DIM(oa, 1) != dims[1]:
        raise ValueError(f"{name} must have shape {(dims[0], dims[1])}, got {out.shape}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(oa) and cnp.PyArray_ISALIGNED(oa) and cnp.PyArray_ISWRITEABLE(oa)):
        raise ValueError(f"{name} must be C-contiguous, aligned and writeable")
    if _overlap(oa, xa):
        if not in_place:
            raise ValueError(f"{name} must not overlap x")
        if (cnp.PyArray_DATA(oa) != cnp.PyArray_DATA(xa)
                or cnp.PyArray_NBYTES(oa) != cnp.PyArray_NBYTES(xa)):
            raise ValueError(f"{name} must be x itself (in-place) or must not overlap x")
    return oa


cdef inline int _disjoint(cnp.ndarray a, str name_a, cnp.ndarray b, str name_b) except -1:
    if _overlap(a, b):
        raise ValueError(f"{name_b} must not overlap {name_a}")
    return 0
