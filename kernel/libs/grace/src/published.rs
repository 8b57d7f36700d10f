//! A value published to readers in read sections and replaced after a grace period.

use alloc::sync::Arc;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::grace::{Grace, ReadSection};

/// A shared value that readers borrow inside a [`ReadSection`] without any
/// write (one load), and that a writer replaces with one swap followed by a
/// grace period, after which the old value is handed back (and can be
/// dropped: no reader holds it any more).
pub struct Published<T: Send + Sync> {
    /// The current value: a pointer from `Arc::into_raw`, owning one strong
    /// count.
    pointer: AtomicPtr<T>,
    /// The grace domain whose read sections protect the value.
    grace: Arc<Grace>,
    /// Owns an `Arc<T>` (for `Send`, `Sync` and drop checking).
    _owns: PhantomData<Arc<T>>,
}

impl<T: Send + Sync> core::fmt::Debug for Published<T> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.debug_struct("Published").finish_non_exhaustive()
    }
}

impl<T: Send + Sync> Published<T> {
    /// Publishes `value` under `grace`'s read sections.
    pub fn new(value: Arc<T>, grace: Arc<Grace>) -> Published<T> {
        Published {
            pointer: AtomicPtr::new(Arc::into_raw(value).cast_mut()),
            grace,
            _owns: PhantomData,
        }
    }

    /// The grace domain.
    pub fn grace(&self) -> &Arc<Grace> {
        &self.grace
    }

    /// The current value, borrowed for as long as `section` stays open.
    /// Panics if `section` belongs to another grace domain.
    #[inline]
    pub fn read<'section>(&'section self, section: &'section ReadSection<'_>) -> &'section T {
        assert!(
            core::ptr::eq(section.grace(), &*self.grace),
            "a read section of another grace domain"
        );
        let pointer = self.pointer.load(Ordering::SeqCst);
        // SAFETY: `pointer` came from `Arc::into_raw` (in `new` or `replace`)
        // and the cell owned a strong count for it when it was loaded. The
        // count is given up only by `replace`, after a grace period that
        // began after the swap removing `pointer`; that grace period waits
        // for every read section of this domain open at the swap, including
        // `section` (open now, on this CPU, by the identity's promise), and
        // `section` outlives the returned reference. `Drop` takes `&mut
        // self`, so it cannot run while this borrow of `self` lives.
        unsafe { &*pointer }
    }

    /// Opens a read section of the cell's own grace domain on the calling
    /// CPU and borrows the current value in it (no check that the section
    /// matches: it is this cell's).
    #[inline]
    pub fn read_section(&self) -> Reading<'_, T> {
        let section = self.grace.read();
        let pointer = self.pointer.load(Ordering::SeqCst);
        // SAFETY: as in `read`: `pointer` came from `Arc::into_raw` and the
        // cell owned a strong count for it when it was loaded, after
        // `section` (of this cell's grace domain) opened; `replace` gives
        // that count up only after a grace period that waits for `section`,
        // which the returned `Reading` holds for as long as the reference.
        let value = unsafe { &*pointer };
        Reading { value, section }
    }

    /// Replaces the value with `value`, waits for a grace period (see
    /// [`Grace::synchronize`], whose `relax` this passes on) and returns the
    /// old value, which no read section holds any more. Readers in sections
    /// that begin after the swap see `value`. Panics if called inside a read
    /// section of this domain.
    pub fn replace(&self, value: Arc<T>, relax: fn()) -> Arc<T> {
        self.replace_watched(value, relax, &mut |_awaited| {})
    }

    /// [`replace`](Published::replace), passing `watch` on to
    /// [`Grace::synchronize_watched`] for the grace period.
    pub fn replace_watched(
        &self,
        value: Arc<T>,
        relax: fn(),
        watch: &mut dyn FnMut(crate::Awaited<'_>),
    ) -> Arc<T> {
        assert!(
            !self.grace.inside_read(),
            "Published::replace called inside a read section"
        );
        let old = self
            .pointer
            .swap(Arc::into_raw(value).cast_mut(), Ordering::SeqCst);
        self.grace.synchronize_watched(relax, watch);
        // SAFETY: `old` came from `Arc::into_raw` and carried the strong count
        // the cell owned; the swap took it out of the cell, so this is the
        // only place that gives it back, once, after the grace period above
        // ended every section that could have loaded it.
        unsafe { Arc::from_raw(old) }
    }
}

/// A value borrowed from a [`Published`] cell with the read section that
/// keeps it alive (see [`Published::read_section`]).
pub struct Reading<'cell, T> {
    value: &'cell T,
    section: ReadSection<'cell>,
}

impl<'cell, T> Reading<'cell, T> {
    /// The value.
    #[inline]
    pub fn value(&self) -> &T {
        self.value
    }

    /// The CPU the section runs on.
    #[inline]
    pub fn cpu(&self) -> usize {
        self.section.cpu()
    }
}

impl<T> core::fmt::Debug for Reading<'_, T> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Reading")
            .field("cpu", &self.section.cpu())
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync> Drop for Published<T> {
    fn drop(&mut self) {
        let pointer = *self.pointer.get_mut();
        // SAFETY: `pointer` came from `Arc::into_raw` and carries the cell's
        // strong count; `&mut self` means no reader borrows the cell, so no
        // reference from `read` is alive.
        drop(unsafe { Arc::from_raw(pointer) });
    }
}
