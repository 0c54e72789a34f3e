//! Counting (spec §4), thresholds (§5) and deterministic sampling (§6) over CSR match
//! lists; the typed API is `metaclip.core`.

use metaclip_core::texts::{Packed, Texts};
use metaclip_core::{count, sample, threshold};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList};

use crate::buffers::{as_slice, bytes_of, output, pack_strings, raw_bytes};
use crate::error::to_py;

/// Per-entry counts (uint64 bytes) of CSR ids.
#[pyfunction]
pub fn count_ids<'py>(
    py: Python<'py>,
    ids: PyBuffer<u32>,
    n_entries: usize,
) -> PyResult<Bound<'py, PyByteArray>> {
    let ids = as_slice(&ids)?;
    let counts = py
        .detach(|| count::count_ids(ids, n_entries))
        .map_err(|e| to_py(py, e))?;
    Ok(bytes_of(py, &counts))
}

/// Per-entry counts (uint64 bytes) of the ids in the CSR rows whose `keep` byte is set.
#[pyfunction]
pub fn count_rows<'py>(
    py: Python<'py>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    keep: PyBuffer<u8>,
    n_entries: usize,
) -> PyResult<Bound<'py, PyByteArray>> {
    let (o, i, k) = (as_slice(&offsets)?, as_slice(&ids)?, as_slice(&keep)?);
    let counts = py
        .detach(|| count::count_rows(o, i, k, n_entries))
        .map_err(|e| to_py(py, e))?;
    Ok(bytes_of(py, &counts))
}

/// (ids uint32 bytes, counts uint64 bytes) of the entries that occur in `ids`, or in the
/// CSR rows whose `keep` byte is set when `offsets` and `keep` are given; ascending ids.
#[pyfunction]
#[pyo3(signature = (ids, n_entries, offsets = None, keep = None))]
pub fn count_sparse<'py>(
    py: Python<'py>,
    ids: PyBuffer<u32>,
    n_entries: usize,
    offsets: Option<PyBuffer<i64>>,
    keep: Option<PyBuffer<u8>>,
) -> PyResult<(Bound<'py, PyByteArray>, Bound<'py, PyByteArray>)> {
    let ids = as_slice(&ids)?;
    let offsets = offsets.as_ref().map(as_slice).transpose()?;
    let keep = keep.as_ref().map(as_slice).transpose()?;
    let (e, c) = py
        .detach(|| count::count_sparse(ids, n_entries, offsets, keep))
        .map_err(|e| to_py(py, e))?;
    Ok((bytes_of(py, &e), bytes_of(py, &c)))
}

/// MC1 probabilities `min(1, t / count)`, 0 for count 0 (float64 bytes).
#[pyfunction]
pub fn probabilities<'py>(
    py: Python<'py>,
    counts: PyBuffer<u64>,
    t: f64,
) -> PyResult<Bound<'py, PyByteArray>> {
    let counts = as_slice(&counts)?;
    let p = py
        .detach(|| threshold::probabilities(counts, t))
        .map_err(|e| to_py(py, e))?;
    Ok(bytes_of(py, &p))
}

/// Share of all matches on entries with count < t.
#[pyfunction]
pub fn tail_mass(counts: PyBuffer<u64>, t: f64) -> PyResult<f64> {
    Ok(threshold::tail_mass(as_slice(&counts)?, t))
}

/// MC2: the count whose ascending cumulative share of matches is closest to `tail`.
#[pyfunction]
pub fn threshold_for_tail(py: Python<'_>, counts: PyBuffer<u64>, tail: f64) -> PyResult<u64> {
    threshold::threshold_for_tail(as_slice(&counts)?, tail).map_err(|e| to_py(py, e))
}

/// xxh3 hashes (uint64 bytes) of str keys under a seed.
#[pyfunction]
pub fn hash_keys<'py>(
    py: Python<'py>,
    keys: &Bound<'py, PyList>,
    seed: u64,
) -> PyResult<Bound<'py, PyByteArray>> {
    let (data, offsets) = pack_strings(keys)?;
    hash_offsets(py, &data, &offsets, seed)
}

/// xxh3 hashes of keys packed as bytes plus int64 offsets.
#[pyfunction]
pub fn hash_keys_packed<'py>(
    py: Python<'py>,
    data: PyBuffer<u8>,
    offsets: PyBuffer<i64>,
    seed: u64,
) -> PyResult<Bound<'py, PyByteArray>> {
    hash_offsets(py, as_slice(&data)?, as_slice(&offsets)?, seed)
}

fn hash_offsets<'py>(
    py: Python<'py>,
    data: &[u8],
    offsets: &[i64],
    seed: u64,
) -> PyResult<Bound<'py, PyByteArray>> {
    let packed = Packed::new(data, offsets).map_err(|e| to_py(py, e))?;
    let hashes: Vec<u64> = py.detach(|| {
        (0..offsets.len() - 1)
            .map(|i| sample::key_hash(seed, packed.get(i)))
            .collect()
    });
    Ok(bytes_of(py, &hashes))
}

/// The coin in [0, 1) for (seed, key, entry, epoch) — spec §6.
#[pyfunction]
#[pyo3(signature = (seed, key, entry, epoch = 0))]
pub fn coin(seed: u64, key: &str, entry: u32, epoch: u32) -> f64 {
    sample::coin(sample::key_hash(seed, key.as_bytes()), entry, epoch)
}

/// MC1 keep flags (uint8 bytes) per text.
#[pyfunction]
#[pyo3(signature = (key_hashes, offsets, ids, probs, epoch = 0, threads = 0))]
pub fn sample_pairs<'py>(
    py: Python<'py>,
    key_hashes: PyBuffer<u64>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    probs: PyBuffer<f64>,
    epoch: u32,
    threads: usize,
) -> PyResult<Bound<'py, PyByteArray>> {
    let (k, o, i, p) = (
        as_slice(&key_hashes)?,
        as_slice(&offsets)?,
        as_slice(&ids)?,
        as_slice(&probs)?,
    );
    let keep = py
        .detach(|| sample::sample_pairs(k, o, i, p, epoch, threads))
        .map_err(|e| to_py(py, e))?;
    let keep: Vec<u8> = keep.into_iter().map(u8::from).collect();
    Ok(PyByteArray::new(py, &keep))
}

/// The CSR rows whose `keep` byte is set: (offsets int64 bytes, ids uint32 bytes), in
/// buffers from `alloc(nbytes)` when given (see `output`).
#[pyfunction]
#[pyo3(signature = (offsets, ids, keep, alloc = None))]
pub fn select_rows<'py>(
    py: Python<'py>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    keep: PyBuffer<u8>,
    alloc: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let (o, i, k) = (as_slice(&offsets)?, as_slice(&ids)?, as_slice(&keep)?);
    let kept = count::kept_ranges(o, i, k).map_err(|e| to_py(py, e))?;
    let (rows, n_ids) = kept.clone().fold((0, 0), |(r, n), x| (r + 1, n + x.len()));
    // Straight from the input rows into the output buffers.
    let offsets = output(py, alloc, (rows + 1) * 8, |out| {
        let mut at = 0i64;
        let mut slots = out.chunks_exact_mut(8);
        if let Some(first) = slots.next() {
            first.copy_from_slice(&at.to_le_bytes());
        }
        for (slot, r) in slots.zip(kept.clone()) {
            at += r.len() as i64;
            slot.copy_from_slice(&at.to_le_bytes());
        }
    })?;
    let ids = output(py, alloc, n_ids * 4, |out| {
        let mut at = 0;
        for r in kept {
            let raw = raw_bytes(&i[r]);
            out[at..at + raw.len()].copy_from_slice(raw);
            at += raw.len();
        }
    })?;
    Ok((offsets, ids))
}

/// 1 − Π(1 − p) per CSR row (float64 bytes); 0 for rows without ids.
#[pyfunction]
#[pyo3(signature = (offsets, ids, probs, threads = 0))]
pub fn keep_probability<'py>(
    py: Python<'py>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    probs: PyBuffer<f64>,
    threads: usize,
) -> PyResult<Bound<'py, PyByteArray>> {
    let (o, i, p) = (as_slice(&offsets)?, as_slice(&ids)?, as_slice(&probs)?);
    let kp = py
        .detach(|| sample::keep_probability(o, i, p, threads))
        .map_err(|e| to_py(py, e))?;
    Ok(bytes_of(py, &kp))
}

/// MC2 image-level sampling: (keep uint8 bytes, picked text row int64 bytes) per image.
#[pyfunction]
#[pyo3(signature = (key_hashes, image_offsets, offsets, ids, probs, epoch = 0, threads = 0))]
#[allow(clippy::too_many_arguments)]
pub fn sample_images<'py>(
    py: Python<'py>,
    key_hashes: PyBuffer<u64>,
    image_offsets: PyBuffer<i64>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    probs: PyBuffer<f64>,
    epoch: u32,
    threads: usize,
) -> PyResult<(Bound<'py, PyByteArray>, Bound<'py, PyByteArray>)> {
    let k = as_slice(&key_hashes)?;
    let io = as_slice(&image_offsets)?;
    let (o, i, p) = (as_slice(&offsets)?, as_slice(&ids)?, as_slice(&probs)?);
    let (keep, picked) = py
        .detach(|| sample::sample_images(k, io, o, i, p, epoch, threads))
        .map_err(|e| to_py(py, e))?;
    let keep: Vec<u8> = keep.into_iter().map(u8::from).collect();
    Ok((PyByteArray::new(py, &keep), bytes_of(py, &picked)))
}
