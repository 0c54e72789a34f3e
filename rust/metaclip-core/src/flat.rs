//! A small open-addressing hash map from `u64` keys to `Copy` values, laid out as one flat
//! array of (key, value) slots so a lookup touches one cache line, and that line can be
//! prefetched while earlier tokens are still being looked up.

/// Hint the CPU to load the cache line at `p` (any address: a prefetch never faults).
#[inline(always)]
pub fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: prefetch never faults, whatever the address.
        #[allow(unused_unsafe)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Never a valid key (callers guarantee it).
pub const EMPTY: u64 = u64::MAX;

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::mapped::Buf;

/// One (key, value) slot of a [`FlatMap`].
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Slot<V> {
    key: u64,
    val: V,
}

/// The map: `u64` keys (never [`EMPTY`]) to `Copy` values, the hash given by the caller.
pub struct FlatMap<V: Copy + Default> {
    slots: Buf<Slot<V>>,
    mask: usize,
    len: usize,
}

impl<V: Copy + Default> FlatMap<V> {
    /// An empty map (16 slots).
    pub fn new() -> Self {
        FlatMap {
            slots: Buf::from_vec(empty_slots(16)),
            mask: 15,
            len: 0,
        }
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every stored key (in slot order).
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().map(|s| s.key).filter(|&k| k != EMPTY)
    }

    /// Whether the slots are used in place from a file mapping.
    pub fn is_mapped(&self) -> bool {
        self.slots.is_mapped()
    }

    /// Heap bytes held by the slots.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot<V>>()
    }

    /// Hint the CPU to load the slot line for `hash`.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        prefetch_ptr(self.slot_ptr(hash));
    }

    /// The address of `hash`'s first slot (for [`prefetch_ptr`]).
    #[inline(always)]
    pub fn slot_ptr(&self, hash: u64) -> *const u8 {
        self.slots.as_ptr().wrapping_add(hash as usize & self.mask) as *const u8
    }

    /// The value of the first slot on `hash`'s probe path whose key is `key` and for
    /// which `eq` holds (used to check long words in full).
    #[inline]
    pub fn find(&self, hash: u64, key: u64, mut eq: impl FnMut(&V) -> bool) -> Option<&V> {
        let mut i = hash as usize & self.mask;
        loop {
            let s = &self.slots[i];
            if s.key == key && eq(&s.val) {
                return Some(&s.val);
            }
            if s.key == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Like [`FlatMap::find`], for changing the value in place.
    #[inline]
    pub fn find_mut(
        &mut self,
        hash: u64,
        key: u64,
        mut eq: impl FnMut(&V) -> bool,
    ) -> Option<&mut V> {
        let mut i = hash as usize & self.mask;
        let slots = self.slots.to_mut();
        loop {
            let s = &slots[i];
            if s.key == key && eq(&s.val) {
                return Some(&mut slots[i].val);
            }
            if s.key == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Insert a key known to be absent. `rehash` gives the hash of a stored (key, value).
    pub fn insert_new(&mut self, hash: u64, key: u64, val: V, rehash: impl Fn(u64, &V) -> u64) {
        debug_assert!(key != EMPTY);
        // Grow past 3/4 full: linear probes then mostly stay within one cache line.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow(&rehash);
        }
        self.place(hash, key, val);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, key: u64, val: V) {
        let mut i = hash as usize & self.mask;
        let slots = self.slots.to_mut();
        while slots[i].key != EMPTY {
            i = (i + 1) & self.mask;
        }
        slots[i] = Slot { key, val };
    }

    fn grow(&mut self, rehash: &impl Fn(u64, &V) -> u64) {
        let n = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, Buf::from_vec(empty_slots(n)));
        self.mask = n - 1;
        for s in old.iter().copied().filter(|s| s.key != EMPTY) {
            let h = rehash(s.key, &s.val);
            self.place(h, s.key, s.val);
        }
    }
}

impl<V: Copy + Default> FlatMap<V>
where
    Slot<V>: Pod,
{
    /// The slot array as bytes, for [`FlatMap::from_slots`].
    pub fn slot_bytes(&self) -> &[u8] {
        self.slots.as_bytes()
    }

    /// A map over slots written by [`FlatMap::slot_bytes`] (e.g. mapped from a file) that
    /// hold `len` keys.
    pub fn from_slots(slots: Buf<Slot<V>>, len: usize) -> Result<Self> {
        // A lookup stops at an empty slot: there must be one.
        if !slots.len().is_power_of_two() || len >= slots.len() {
            return Err(Error::invalid("matcher file: a hash table has a bad size"));
        }
        Ok(FlatMap {
            mask: slots.len() - 1,
            slots,
            len,
        })
    }
}

// SAFETY: `repr(C)` u64 key + [u32; 2]: 16 bytes, no padding, any bits valid.
unsafe impl Zeroable for Slot<[u32; 2]> {}
// SAFETY: as above.
unsafe impl Pod for Slot<[u32; 2]> {}
const _: () = assert!(std::mem::size_of::<Slot<[u32; 2]>>() == 16);

/// `n` empty slots; large arrays ask for transparent huge pages before the first touch,
/// since lookups jump all over them and 4 KiB pages would add a TLB miss to most.
fn empty_slots<V: Copy + Default>(n: usize) -> Vec<Slot<V>> {
    let mut v: Vec<Slot<V>> = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<Slot<V>>();
        if bytes >= 2 * HUGE {
            let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
            let end = (v.as_ptr() as usize + bytes) & !(HUGE - 1);
            if end > start {
                // SAFETY: advice on our own allocation; it never changes its contents.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    v.resize(
        n,
        Slot {
            key: EMPTY,
            val: V::default(),
        },
    );
    v
}

impl<V: Copy + Default> Default for FlatMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_grow() {
        let mut m: FlatMap<u32> = FlatMap::new();
        let h = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
        for k in 0..10_000u64 {
            m.insert_new(h(k), k, k as u32 * 2, |k, _| h(k));
        }
        assert_eq!(m.len(), 10_000);
        for k in 0..10_000u64 {
            assert_eq!(m.find(h(k), k, |_| true), Some(&(k as u32 * 2)));
        }
        assert_eq!(m.find(h(10_001), 10_001, |_| true), None);
    }
}
