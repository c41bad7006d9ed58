//! Reading whole start-up packets and whole messages during start-up, where the session talks
//! to one peer at a time. The relay has its own streaming loop.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::pg::frame::{self, HEADER_LEN};
use crate::protocol::pg::startup::{self, StartupPacket};
use crate::protocol::pg::{FrameError, PgError};
use crate::session::pg::SessionError;

/// Reads one untagged start-up packet. `Ok(None)` if the peer closed before sending anything.
pub async fn read_startup_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<StartupPacket>, SessionError> {
    let mut len_bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = stream.read(&mut len_bytes[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(PgError::protocol_violation("incomplete startup packet").into())
            };
        }
        got += n;
    }
    let len = startup::packet_len(&len_bytes)
        .map_err(PgError::protocol_violation)?
        .expect("four bytes were read");
    let mut packet = vec![0u8; len];
    packet[..4].copy_from_slice(&len_bytes);
    stream
        .read_exact(&mut packet[4..])
        .await
        .map_err(|_| PgError::protocol_violation("incomplete startup packet"))?;
    startup::parse(&packet)
        .map(Some)
        .map_err(|e| PgError::protocol_violation(e).into())
}

/// A whole tagged message.
pub struct Message {
    pub tag: u8,
    /// The message as it was on the wire (tag and length included).
    pub raw: BytesMut,
}

impl Message {
    pub fn body(&self) -> &[u8] {
        &self.raw[HEADER_LEN..]
    }
}

/// Reads whole tagged messages from a buffer filled a socket read at a time, so that messages
/// that arrive together cost one read. What is left over when the stage ends goes to the next.
#[derive(Default)]
pub struct Reader {
    buf: BytesMut,
}

impl Reader {
    /// Reads one message of at most `max` bytes. EOF is an `UnexpectedEof` I/O error.
    pub async fn message<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        max: usize,
    ) -> Result<Message, ReadError> {
        loop {
            if let Some(h) = frame::complete(&self.buf, max)? {
                let raw = self.buf.split_to(h.total_len);
                return Ok(Message { tag: h.tag, raw });
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8 * 1024);
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Bytes read past the last message.
    pub fn into_leftover(self) -> BytesMut {
        self.buf
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}
