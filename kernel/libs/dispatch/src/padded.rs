//! Cache-line padding, so that one CPU's data never shares a line with another CPU's.

use core::ops::Deref;

/// Bytes a [`CachePadded`] cell occupies at least: two 64-byte lines, because
/// x86 processors prefetch lines in adjacent pairs.
pub(crate) const CACHE_PADDING_BYTES: usize = 128;

/// A value aligned (and so padded) to [`CACHE_PADDING_BYTES`].
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

const _: () = assert!(core::mem::align_of::<CachePadded<u8>>() == CACHE_PADDING_BYTES);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
