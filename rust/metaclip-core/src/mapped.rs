//! Flat tables that are either owned (built in memory) or used in place from a read-only
//! file mapping, so that every process on a node that maps the same file shares its pages.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

use bytemuck::Pod;
use memmap2::Mmap;

use crate::error::{Error, Result};

enum Owner<T> {
    Vec(Vec<T>),
    /// Only held, to keep the mapping alive while `ptr` points into it.
    Map(#[allow(dead_code)] Arc<Mmap>),
}

/// A read-only slice of `T` held by a `Vec` or by a shared mapping. Reading it is a
/// plain slice access either way (no branch on where it lives).
pub struct Buf<T> {
    ptr: NonNull<T>,
    len: usize,
    owner: Owner<T>,
}

// SAFETY: `Buf` only reads through `ptr`, which points into its own `Vec` or into a
// mapping kept alive by the `Arc`; both are as shareable as `T` itself.
unsafe impl<T: Sync> Sync for Buf<T> {}
// SAFETY: as above; moving a `Buf` moves the `Vec` (its heap block stays put) or an `Arc`.
unsafe impl<T: Send + Sync> Send for Buf<T> {}

impl<T> Buf<T> {
    /// Own `v`.
    pub fn from_vec(mut v: Vec<T>) -> Self {
        // `as_mut_ptr` (not a `&mut [T]`), so the pointer stays valid while `v` lives
        // unchanged inside `owner`.
        let ptr = NonNull::new(v.as_mut_ptr()).unwrap_or(NonNull::dangling());
        Buf {
            ptr,
            len: v.len(),
            owner: Owner::Vec(v),
        }
    }

    /// Whether the slice lives in a file mapping.
    pub fn is_mapped(&self) -> bool {
        matches!(self.owner, Owner::Map(_))
    }

    /// The slice, writable: copied out of the mapping first if it is mapped.
    pub fn to_mut(&mut self) -> &mut [T]
    where
        T: Clone,
    {
        if self.is_mapped() {
            *self = Buf::from_vec(self.deref().to_vec());
        }
        // SAFETY: owned here; `ptr` came from the `Vec`'s `as_mut_ptr`, and `&mut self`
        // rules out any other reference into it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Clone> Buf<T> {
    /// Change the elements as a `Vec` (copied out of the mapping first if mapped).
    pub fn with_vec<R>(&mut self, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
        if self.is_mapped() {
            *self = Buf::from_vec(self.deref().to_vec());
        }
        let mut v = match std::mem::replace(&mut self.owner, Owner::Vec(Vec::new())) {
            Owner::Vec(v) => v,
            Owner::Map(_) => Vec::new(), // made owned above
        };
        let r = f(&mut v);
        *self = Buf::from_vec(v);
        r
    }
}

impl<T: Pod> Buf<T> {
    /// `len` bytes of `map` from `offset`, as `T`s; the offset must be aligned for `T`.
    pub fn mapped(map: &Arc<Mmap>, offset: usize, len: usize) -> Result<Self> {
        let bytes = offset
            .checked_add(len)
            .and_then(|end| map.get(offset..end))
            .ok_or_else(|| Error::invalid("matcher file: a section is out of bounds"))?;
        let items: &[T] = bytemuck::try_cast_slice(bytes)
            .map_err(|e| Error::invalid(format!("matcher file: a section is misaligned: {e}")))?;
        Ok(Buf {
            ptr: NonNull::from(items).cast(),
            len: items.len(),
            owner: Owner::Map(Arc::clone(map)),
        })
    }

    /// The slice as bytes (for writing it to a file).
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.deref())
    }
}

impl<T> Deref for Buf<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr`/`len` describe the owner's live, unchanged elements (see above).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Default for Buf<T> {
    fn default() -> Self {
        Buf::from_vec(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_and_copy_on_write() {
        let mut b = Buf::from_vec(vec![1u32, 2, 3]);
        assert_eq!(&*b, &[1, 2, 3]);
        b.to_mut()[1] = 7;
        assert_eq!(&*b, &[1, 7, 3]);
        b.with_vec(|v| v.extend_from_slice(&[4; 100]));
        assert_eq!(b.len(), 103);
        assert_eq!(b[102], 4);
        assert_eq!(b.as_bytes().len(), 412);
        assert!(!b.is_mapped());
    }
}
