//! Buffer sizing shared by both halves of a secure stream: grow with the
//! traffic, give the memory back when the stream goes quiet.
//!
//! An idle connection should cost little memory, a busy one should never
//! allocate or zero memory on its hot path. So a buffer starts at
//! [`INITIAL_LEN`], doubles when the traffic needs more room, and is freed
//! only at a point where it is empty anyway (a read that found nothing, a
//! flush that wrote everything) and only when it is small, or has not been
//! busy for [`RELEASE_AFTER`]. A bulk transfer keeps marking its buffers
//! busy, so it keeps them; a connection that goes quiet after a transfer
//! frees them at its next wake-up after that period (at the latest at the
//! next keep-alive of the layer above).

use std::time::{Duration, Instant};

/// First size of a buffer, and the size at or under which an empty buffer
/// is always freed: small enough that allocating and zeroing it again for
/// the next message costs next to nothing. Also the receive buffer's
/// [`RECEIVE_BUFFER_FLOOR`](crate::RECEIVE_BUFFER_FLOOR): what a stream may
/// hold without drawing on its receive budget.
pub(super) const INITIAL_LEN: usize = crate::RECEIVE_BUFFER_FLOOR;

/// A buffer that has grown past [`INITIAL_LEN`] is freed when empty once it
/// has not been busy for this long.
pub(super) const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Bytes moved in one go (one socket read, one flush) that mark a buffer
/// busy.
pub(super) const BUSY_BYTES: usize = 16 * 1024;

/// A zero-initialised byte buffer whose length is its usable size.
#[derive(Debug, Default)]
pub(super) struct ElasticBuffer {
    bytes: Vec<u8>,
    /// When the buffer last moved at least [`BUSY_BYTES`] at once.
    last_busy: Option<Instant>,
}

impl ElasticBuffer {
    /// The usable bytes (empty while released).
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The usable bytes, mutably.
    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Bytes of memory held (at least [`len`](Self::len)).
    pub(super) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Current usable size.
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Makes the buffer at least `min` bytes long (and at least double its
    /// current size, to keep growth steps few), never more than `max`.
    pub(super) fn grow_to(&mut self, min: usize, max: usize) {
        if self.bytes.len() >= min {
            return;
        }
        let target = min
            .max(self.bytes.len() * 2)
            .max(INITIAL_LEN)
            .min(max.max(min));
        // Exactly: the capacity is what the receive budget is charged for.
        self.bytes.reserve_exact(target - self.bytes.len());
        self.bytes.resize(target, 0);
    }

    /// Shrinks the buffer to `len` bytes, keeping its first `len` bytes and
    /// giving the rest of the memory back.
    pub(super) fn shrink_to(&mut self, len: usize) {
        if len < self.bytes.len() {
            self.bytes.truncate(len);
            self.bytes.shrink_to_fit();
        }
    }

    /// True if the buffer has not been busy for [`RELEASE_AFTER`].
    pub(super) fn is_quiet(&self) -> bool {
        self.last_busy
            .is_none_or(|at| at.elapsed() >= RELEASE_AFTER)
    }

    /// Frees the memory now. The caller guarantees nothing in it is live.
    pub(super) fn release(&mut self) {
        self.bytes = Vec::new();
    }

    /// Records that `n` bytes moved through the buffer at once.
    pub(super) fn note_transfer(&mut self, n: usize) {
        if n >= BUSY_BYTES {
            self.last_busy = Some(Instant::now());
        }
    }

    /// Frees the memory of an empty buffer if it is small or has been quiet
    /// for [`RELEASE_AFTER`]. The caller guarantees nothing in it is live.
    pub(super) fn release_if_idle(&mut self) {
        if self.bytes.len() <= INITIAL_LEN || self.is_quiet() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_doubling_within_bounds() {
        let mut b = ElasticBuffer::default();
        b.grow_to(1, 64 * 1024);
        assert_eq!(b.len(), INITIAL_LEN);
        b.grow_to(INITIAL_LEN + 1, 64 * 1024);
        assert_eq!(b.len(), 2 * INITIAL_LEN);
        b.grow_to(60 * 1024, 64 * 1024);
        assert_eq!(b.len(), 60 * 1024);
        b.grow_to(61 * 1024, 64 * 1024);
        assert_eq!(b.len(), 64 * 1024, "doubling is capped at the maximum");
        b.grow_to(10, 64 * 1024);
        assert_eq!(b.len(), 64 * 1024, "never shrinks by growing");
    }

    #[test]
    fn small_buffers_are_always_released() {
        let mut b = ElasticBuffer::default();
        b.grow_to(1, 1 << 20);
        b.note_transfer(BUSY_BYTES);
        b.release_if_idle();
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn busy_large_buffers_are_kept_quiet_ones_released() {
        let mut b = ElasticBuffer::default();
        b.grow_to(4 * INITIAL_LEN, 1 << 20);
        b.note_transfer(BUSY_BYTES);
        b.release_if_idle();
        assert_eq!(b.len(), 4 * INITIAL_LEN, "just busy: kept");

        b.last_busy = Instant::now().checked_sub(RELEASE_AFTER);
        b.release_if_idle();
        assert_eq!(b.len(), 0, "quiet for RELEASE_AFTER: released");
    }

    #[test]
    fn capacity_is_exact_and_shrinks() {
        let mut b = ElasticBuffer::default();
        b.grow_to(INITIAL_LEN, INITIAL_LEN);
        b.grow_to(3 * INITIAL_LEN, 3 * INITIAL_LEN);
        assert_eq!(b.capacity(), 3 * INITIAL_LEN);
        b.as_mut_slice()[..3].copy_from_slice(b"abc");
        b.shrink_to(INITIAL_LEN);
        assert_eq!((b.len(), b.capacity()), (INITIAL_LEN, INITIAL_LEN));
        assert_eq!(&b.as_slice()[..3], b"abc");
    }

    #[test]
    fn grown_buffer_never_busy_is_released() {
        let mut b = ElasticBuffer::default();
        b.grow_to(4 * INITIAL_LEN, 1 << 20);
        b.note_transfer(BUSY_BYTES - 1);
        b.release_if_idle();
        assert_eq!(b.len(), 0);
    }
}
