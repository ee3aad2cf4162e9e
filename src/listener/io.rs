//! The stream every accepted connection is read through: it records when the peer last sent something (for choosing
//! whom to shed) and fails the connection's reads and writes once the table has shed it.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::table::Slot;

/// A TCP stream holding its slot in the listener's table.
pub struct Tracked {
    stream: TcpStream,
    slot: Slot,
}

impl Tracked {
    pub(super) fn new(stream: TcpStream, slot: Slot) -> Self {
        Self { stream, slot }
    }

    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }

    fn shed_error() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection shed to admit a newer one")
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        // Every read of every connection passes here: borrow the row, no reference count traffic.
        let this = &mut *self;
        let entry = this.slot.entry();
        entry.register(cx.waker());
        if entry.is_shed() {
            return Poll::Ready(Err(Self::shed_error()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.slot.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.slot.is_shed() {
            return Poll::Ready(Err(Self::shed_error()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.slot.is_shed() {
            return Poll::Ready(Err(Self::shed_error()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
