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
    pub body: BytesMut,
    /// The message as it was on the wire (tag and length included).
    pub raw: BytesMut,
}

/// Reads one tagged message of at most `max` bytes. EOF is an `UnexpectedEof` I/O error.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<Message, ReadError> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head).await?;
    let h = frame::header(&head, max)?.expect("five bytes were read");
    let mut raw = BytesMut::with_capacity(h.total_len);
    raw.extend_from_slice(&head);
    raw.resize(h.total_len, 0);
    stream.read_exact(&mut raw[HEADER_LEN..]).await?;
    let body = BytesMut::from(&raw[HEADER_LEN..]);
    Ok(Message {
        tag: h.tag,
        body,
        raw,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}
