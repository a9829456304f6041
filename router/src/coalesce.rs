//! Gathering a client connection's writes until its HTTP/2 task has nothing else ready.
//!
//! hyper's HTTP/2 server flushes its connection whenever its task has written the frames it
//! holds, and each response becomes ready in a task of its own (tokio's LIFO slot then runs
//! the connection task straight after it). Under many concurrent requests that made about
//! two `writev`s per answered get, its headers and then its body: 36,500 a second for
//! 18,100 gets at 64 clients, and a loopback `writev` also delivers to the reader and wakes
//! it. [`Coalesced`] keeps what the connection writes and puts off its first flush by one
//! turn of the scheduler (the task wakes itself, which tokio runs after the tasks already
//! queued, not in the LIFO slot): responses that became ready meanwhile go out in the same
//! write. A lone request waits for one more poll of its connection task; a connection with
//! nothing else to do is written at that next poll. This is what gRPC-Go's writer does,
//! writing only when its queue runs empty.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Most bytes kept before they are written, whatever the flushes: a large response goes out
/// as it comes (backpressure as without the wrapper).
const MAX_GATHERED_BYTES: usize = 64 << 10;

/// A connection whose writes are gathered and whose flushes are put off by one poll.
pub(crate) struct Coalesced<T> {
    inner: T,
    /// Bytes taken and not written yet; `buf[written..]` is left to write.
    buf: Vec<u8>,
    written: usize,
    /// Whether the flush of what `buf` holds was put off once already.
    deferred: bool,
}

impl<T> Coalesced<T> {
    pub(crate) fn new(inner: T) -> Coalesced<T> {
        Coalesced {
            inner,
            buf: Vec::new(),
            written: 0,
            deferred: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes everything gathered to the connection.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: writes what is gathered first when they would pass
    /// [`MAX_GATHERED_BYTES`]. `Ready(true)` when they are to be gathered, `Ready(false)`
    /// when they are too many to gather and go straight to the connection.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.buf.len() + len > MAX_GATHERED_BYTES {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(len <= MAX_GATHERED_BYTES))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = slices.iter().map(|slice| slice.len()).sum();
        if !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, slices);
        }
        for slice in slices {
            this.buf.extend_from_slice(slice);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.written < this.buf.len() && !this.deferred {
            // Once around the scheduler first: the responses ready by then join this write.
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: Connected> Connected for Coalesced<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A connection that records each write it is given.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            self.get_mut().writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Counts the wake-ups it is given.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(io: &mut Coalesced<Recorder>, cx: &mut Context<'_>, data: &[u8]) {
        match Pin::new(io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => assert_eq!(n, data.len()),
            other => panic!("write: {other:?}"),
        }
    }

    /// Writes before a flush reach the connection as one write, at the second poll of the
    /// flush; the first puts it off and wakes the task, so it is polled again.
    #[test]
    fn writes_are_gathered_until_the_flush_after_next() {
        let wakes = Arc::new(Wakes::default());
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder::default());
        write(&mut io, &mut cx, b"headers ");
        let slices = [IoSlice::new(b"body "), IoSlice::new(b"trailers")];
        assert!(matches!(
            Pin::new(&mut io).poll_write_vectored(&mut cx, &slices),
            Poll::Ready(Ok(13))
        ));
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending(), "put off once");
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "and the task woken to come back"
        );
        assert!(io.inner.writes.is_empty());
        write(&mut io, &mut cx, b" next");
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.inner.writes, vec![b"headers body trailers next".to_vec()]);
        assert_eq!(io.inner.flushes, 1);

        // Nothing gathered: a flush goes straight through, without putting anything off.
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.inner.flushes, 2);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);

        // The next flush is put off again.
        write(&mut io, &mut cx, b"again");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.inner.writes.len(), 2);
    }

    /// A write that would pass the limit writes what is gathered first; one larger than the
    /// limit goes straight to the connection; a shutdown writes what is left first.
    #[test]
    fn large_writes_and_shutdown_are_not_held() {
        let waker = Arc::new(Wakes::default()).into();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder::default());
        write(&mut io, &mut cx, &[1; 1000]);
        write(&mut io, &mut cx, &vec![2; MAX_GATHERED_BYTES + 1]);
        assert_eq!(
            io.inner.writes,
            vec![vec![1; 1000], vec![2; MAX_GATHERED_BYTES + 1]]
        );
        write(&mut io, &mut cx, &[3; 10]);
        write(&mut io, &mut cx, &vec![4; MAX_GATHERED_BYTES - 10]);
        assert_eq!(io.inner.writes.len(), 2, "exactly the limit is gathered");
        write(&mut io, &mut cx, &[5; 1]);
        assert_eq!(io.inner.writes.len(), 3, "one more byte writes what was gathered");
        assert!(matches!(
            Pin::new(&mut io).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.inner.writes.last(), Some(&vec![5; 1]));
        assert!(io.inner.shut);
    }
}
