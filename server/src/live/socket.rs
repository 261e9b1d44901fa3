//! A stream's connection, written by the server itself rather than by hyper (see
//! `serve::stream_connection`): its frames as HTTP/1.1 chunks (as they are for HTTP/1.0, whose
//! body ends with the connection), gathered into one write, and written without waiting, by
//! the stream's own task or, while the stream is parked, by its batch's writers (`parked.rs`).

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    sync::Arc,
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;

/// Frames gathered into one write at most (a slice each: within the 64 that one `writev` is
/// handed here).
pub const FRAMES_PER_WRITE: usize = 16;

/// A stream's socket, shared by its task and, while it is parked, the hub.
#[derive(Clone, Debug)]
pub struct Socket {
    tcp: Arc<TcpStream>,
    chunked: bool,
}

impl Socket {
    pub fn new(tcp: Arc<TcpStream>, chunked: bool) -> Self {
        Self { tcp, chunked }
    }

    pub fn chunked(&self) -> bool {
        self.chunked
    }

    /// Writes as much of `out` as the socket takes now, without waiting: whether all of it left.
    pub fn try_write(&self, out: &mut Out) -> io::Result<bool> {
        while out.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 64];
            let filled = out.chunks_vectored(&mut slices);
            // One part (an event, most writes) goes with `send`: `writev` costs the kernel more.
            let written = match &slices[..filled] {
                [one] => self.tcp.try_write(one),
                parts => self.tcp.try_write_vectored(parts),
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => out.advance(written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    /// Writes `out` whole, waiting for the socket as long as it takes.
    pub async fn write(&self, out: &mut Out) -> io::Result<()> {
        while !self.try_write(out)? {
            self.tcp.writable().await?;
        }
        Ok(())
    }

    /// Completes when the client closes its side, or sends anything after its request
    /// (nothing more is answered on this connection).
    pub async fn client_left(&self) -> io::Result<()> {
        let mut byte = [0; 1];
        loop {
            self.tcp.readable().await?;
            match self.tcp.try_read(&mut byte) {
                Ok(_) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// `data` as an HTTP/1.1 chunk (its size in hex, the data, CRLF), in one piece: the hub makes
/// an event's once for all the parked streams its writers write to.
pub fn chunk(data: &[u8]) -> Bytes {
    let head = format!("{:x}\r\n", data.len());
    let mut wire = BytesMut::with_capacity(head.len() + data.len() + 2);
    wire.extend_from_slice(head.as_bytes());
    wire.extend_from_slice(data);
    wire.extend_from_slice(b"\r\n");
    wire.freeze()
}

/// The bytes of one write, in the order they leave, without copying a frame's data.
#[derive(Debug, Default)]
pub struct Out {
    parts: VecDeque<Bytes>,
    remaining: usize,
    /// Frames added since the last time it was empty.
    frames: usize,
}

impl Out {
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.remaining += bytes.len();
            self.parts.push_back(bytes);
        }
    }

    /// A frame of the body: a chunk, or the data as it is.
    pub fn frame(&mut self, data: Bytes, chunked: bool) {
        if !data.is_empty() {
            self.wired(if chunked { chunk(&data) } else { data });
        }
    }

    /// The body's end (nothing for HTTP/1.0: closing the connection ends it).
    pub fn end(&mut self, chunked: bool) {
        if chunked {
            self.push(Bytes::from_static(b"0\r\n\r\n"));
        }
    }

    /// A frame already in its wire format (see [`chunk`]).
    pub fn wired(&mut self, wire: Bytes) {
        self.frames += 1;
        self.push(wire);
    }

    /// Whether another frame may join this write.
    pub fn has_room(&self) -> bool {
        self.frames < FRAMES_PER_WRITE
    }
}

impl Buf for Out {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |part| part)
    }

    fn advance(&mut self, mut n: usize) {
        self.remaining -= n;
        while n > 0 {
            let front = self.parts.front_mut().expect("advanced within what remains");
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.parts.pop_front();
        }
        if self.remaining == 0 {
            self.frames = 0;
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            filled += 1;
        }
        filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(out: &mut Out) -> String {
        let mut bytes = Vec::new();
        // A few bytes at a time, as a socket may take them.
        while out.has_remaining() {
            let n = out.chunk().len().min(5);
            bytes.extend_from_slice(&out.chunk()[..n]);
            out.advance(n);
        }
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn frames_as_chunks_or_as_they_are() {
        let data = Bytes::from_static(b"event: x\ndata: {}\n\n");
        let mut out = Out::default();
        out.frame(data.clone(), true);
        out.frame(Bytes::new(), true);
        out.frame(data.clone(), true);
        out.end(true);
        let chunked = "13\r\nevent: x\ndata: {}\n\n\r\n";
        assert_eq!(drain(&mut out), format!("{chunked}{chunked}0\r\n\r\n"));
        assert_eq!(chunk(&data), chunked);
        out.frame(data.clone(), false);
        out.end(false);
        assert_eq!(drain(&mut out), "event: x\ndata: {}\n\n");
    }

    #[test]
    fn a_write_holds_a_bounded_number_of_frames() {
        let mut out = Out::default();
        for _ in 0..FRAMES_PER_WRITE {
            assert!(out.has_room());
            out.frame(Bytes::from_static(b"a"), true);
        }
        assert!(!out.has_room());
        let mut slices = [IoSlice::new(&[]); 64];
        assert_eq!(out.chunks_vectored(&mut slices), FRAMES_PER_WRITE, "within one writev");
        drain(&mut out);
        assert!(out.has_room(), "emptied, it takes frames again");
    }
}
