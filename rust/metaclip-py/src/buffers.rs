//! Between Python objects and the core's slices: buffers borrowed as slices, results as
//! `bytearray`s or a caller's buffers, lists of `str` packed into one buffer, and long
//! batches run detached from the interpreter in chunks, checking for Ctrl-C in between.

use std::ops::Range;

use pyo3::buffer::{Element, PyBuffer, PyUntypedBuffer};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList, PyString};

/// Texts per detached call: between calls we check for Ctrl-C.
const MACRO_CHUNK: usize = 1 << 17;

/// Run `work` over `0..n` in chunks of [`MACRO_CHUNK`], each detached from the interpreter;
/// `take` gets each chunk's result, in order, and signals (Ctrl-C) are checked after it.
pub fn in_chunks<T: Send>(
    py: Python<'_>,
    n: usize,
    work: impl Fn(Range<usize>) -> T + Sync,
    mut take: impl FnMut(T),
) -> PyResult<()> {
    for start in (0..n).step_by(MACRO_CHUNK) {
        let range = start..(start + MACRO_CHUNK).min(n);
        take(py.detach(|| work(range)));
        py.check_signals()?;
    }
    Ok(())
}

/// Borrow a C-contiguous buffer of `T` as a slice.
///
/// SAFETY of the result: the exporter keeps the memory alive and in place while `buf` is
/// held; callers keep `buf` alive for the slice's lifetime. Concurrent mutation from
/// another Python thread would be a data race, as it is for numpy's own C loops.
pub fn as_slice<T: Element>(buf: &PyBuffer<T>) -> PyResult<&[T]> {
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("array must be C-contiguous"));
    }
    let n = buf.item_count();
    if n == 0 {
        return Ok(&[]);
    }
    // SAFETY: PyBuffer::get checked format, item size and alignment for T; see above.
    Ok(unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const T, n) })
}

/// The bytes of a slice of plain numbers.
pub fn raw_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: T is a plain numeric type (u8/u32/u64/i64/f64) with no padding.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// A `bytearray` holding a copy of `v`'s bytes.
pub fn bytes_of<'py, T: Copy>(py: Python<'py>, v: &[T]) -> Bound<'py, PyByteArray> {
    PyByteArray::new(py, raw_bytes(v))
}

/// An output of `nbytes` filled by `fill` (detached, so other threads keep running Python
/// during large copies): a `bytearray`, or when `alloc` is given the writable buffer
/// `alloc(nbytes)` returns (e.g. `pyarrow.allocate_buffer`, whose pool reuses freed memory
/// where a fresh `bytearray` this large costs fresh pages).
pub fn output<'py>(
    py: Python<'py>,
    alloc: Option<&Bound<'py, PyAny>>,
    nbytes: usize,
    fill: impl FnOnce(&mut [u8]) + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(alloc) = alloc else {
        let out = PyByteArray::new_with(py, nbytes, |_| Ok(()))?;
        // SAFETY: a fresh bytearray that no Python code has seen, so nothing resizes it.
        let bytes = unsafe { out.as_bytes_mut() };
        py.detach(move || fill(bytes));
        return Ok(out.into_any());
    };
    let obj = alloc.call1((nbytes,))?;
    let buf = PyUntypedBuffer::get(&obj)?;
    if buf.readonly() || !buf.is_c_contiguous() || buf.len_bytes() != nbytes {
        return Err(PyValueError::new_err(format!(
            "alloc({nbytes}) must return a writable, contiguous buffer of exactly that size"
        )));
    }
    if nbytes > 0 {
        // SAFETY: a writable, contiguous buffer of `nbytes` bytes, which `obj`
        // and the `buf` view keep alive; nothing else has seen the fresh object yet.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr() as *mut u8, nbytes) };
        py.detach(move || fill(bytes));
    }
    Ok(obj)
}

/// Copy Python strings into one packed buffer (so the work can run detached).
pub fn pack_strings(list: &Bound<'_, PyList>) -> PyResult<(Vec<u8>, Vec<i64>)> {
    let mut data = Vec::new();
    let mut offsets = Vec::with_capacity(list.len() + 1);
    offsets.push(0i64);
    for (i, item) in list.iter().enumerate() {
        let s = item.cast::<PyString>().map_err(|_| {
            PyValueError::new_err(format!("text {i} is not a str (got {})", item.get_type()))
        })?;
        data.extend_from_slice(s.to_str()?.as_bytes());
        offsets.push(data.len() as i64);
    }
    Ok((data, offsets))
}
