//! The byte stream of one client connection as hyper sees it. It tells the connection's
//! watchdog when bytes arrive (a request head has begun), and it replaces the bare answers
//! hyper writes by itself to requests it cannot parse (`400`, `414`, `431` with an empty body)
//! with this server's JSON error and security headers.
//!
//! Telling hyper's own answers apart from the application's: on HTTP/1 hyper writes by
//! itself only when no request is open — every request it handed to the application has its
//! response finished (body dropped) and flushed. So a write that begins when the count of
//! started requests equals the count of flushed responses is hyper's own answer. HTTP/2
//! connections (the client opened with the HTTP/2 preface) are left alone.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ConnectionState;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's own answers are a head of about 100 bytes; more is not one of them.
const MAX_OWN_ANSWER: usize = 4096;

/// A client connection's byte stream `S` (TCP, or TLS over TCP: what hyper reads is plain
/// HTTP either way), tracked.
pub struct TrackedIo<S> {
    stream: S,
    state: Arc<ConnectionState>,
    /// How many bytes of the HTTP/2 preface the client's first bytes matched; `None` once one
    /// differed, i.e. the client speaks HTTP/1.
    preface_matched: Option<usize>,
    /// Responses whose last byte had been handed to the socket at the last completed flush.
    responses_flushed: u64,
    outgoing: Outgoing,
    /// `stowage_http_received_bytes_total` and `stowage_http_sent_bytes_total`.
    received: metrics::Counter,
    sent: metrics::Counter,
}

enum Outgoing {
    /// Bytes go straight to the socket.
    Through,
    /// hyper is writing an answer of its own: collected until its head is complete.
    Collecting(Vec<u8>),
    /// The collected answer (rewritten, or as it was) on its way to the socket.
    Draining { bytes: Vec<u8>, written: usize },
}

impl<S: AsyncRead + AsyncWrite + Unpin> TrackedIo<S> {
    pub fn new(stream: S, state: Arc<ConnectionState>) -> TrackedIo<S> {
        TrackedIo {
            stream,
            state,
            preface_matched: Some(0),
            responses_flushed: 0,
            outgoing: Outgoing::Through,
            received: metrics::counter!("stowage_http_received_bytes_total"),
            sent: metrics::counter!("stowage_http_sent_bytes_total"),
        }
    }

    fn hyper_answers_by_itself(&self) -> bool {
        self.preface_matched.is_none() && self.state.requests_started() == self.responses_flushed
    }

    fn note_received(&mut self, bytes: &[u8]) {
        if let Some(matched) = self.preface_matched {
            if matched < H2_PREFACE.len() {
                let n = bytes.len().min(H2_PREFACE.len() - matched);
                self.preface_matched =
                    (bytes[..n] == H2_PREFACE[matched..matched + n]).then_some(matched + n);
            }
        }
        self.state.bytes_received();
    }

    /// Ends collecting: the answer, rewritten if it is one of hyper's bare error answers.
    fn finish_collecting(&mut self, complete: bool) {
        let Outgoing::Collecting(collected) = &mut self.outgoing else { return };
        let head_end = collected.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        if !complete && head_end.is_none() && collected.len() <= MAX_OWN_ANSWER {
            return;
        }
        let collected = std::mem::take(collected);
        let bytes = match head_end {
            Some(end) if end == collected.len() => {
                crate::http::automatic_error_response(&collected).unwrap_or(collected)
            }
            _ => collected,
        };
        self.outgoing = Outgoing::Draining { bytes, written: 0 };
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Outgoing::Draining { bytes, written } = &mut self.outgoing {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.sent.increment(n as u64);
                *written += n;
            }
            self.outgoing = Outgoing::Through;
        }
        Poll::Ready(Ok(()))
    }

    /// Before a write: pending bytes out first, then decide whether this write is hyper's own.
    fn poll_prepare_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        if matches!(self.outgoing, Outgoing::Through) && self.hyper_answers_by_itself() {
            self.outgoing = Outgoing::Collecting(Vec::new());
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.received.increment((buf.filled().len() - before) as u64);
            this.note_received(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_prepare_write(cx))?;
        if let Outgoing::Collecting(collected) = &mut this.outgoing {
            collected.extend_from_slice(buf);
            this.finish_collecting(false);
            return Poll::Ready(Ok(buf.len()));
        }
        let written = ready!(Pin::new(&mut this.stream).poll_write(cx, buf))?;
        this.sent.increment(written as u64);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_prepare_write(cx))?;
        if let Outgoing::Collecting(collected) = &mut this.outgoing {
            let mut total = 0;
            for buf in bufs {
                collected.extend_from_slice(buf);
                total += buf.len();
            }
            this.finish_collecting(false);
            return Poll::Ready(Ok(total));
        }
        let written = ready!(Pin::new(&mut this.stream).poll_write_vectored(cx, bufs))?;
        this.sent.increment(written as u64);
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Read first: every response finished by now has had all its bytes written to us,
        // since hyper flushes only after its buffer is empty.
        let finished = this.state.responses_finished();
        this.finish_collecting(true);
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.stream).poll_flush(cx))?;
        this.responses_flushed = this.responses_flushed.max(finished);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.finish_collecting(true);
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}
