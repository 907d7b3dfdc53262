//! Length-prefixed Kafka frames.
//!
//! A frame is read in two steps. [`read_head`] reads the length prefix, checks it against the
//! configured maximum before anything is allocated for the body, and reads only the first bytes
//! of the payload, enough to route it. A frame nobody needs to change is then streamed on with
//! [`Head::forward`] as its bytes arrive (cut-through), so a 1 MB Fetch response is not held
//! back until its last byte is in; a frame that must be inspected is read whole with
//! [`Head::complete`]. Either way the bytes sent are the bytes received.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::error::{Error, Side};

/// One Kafka request or response, exactly as it travelled on the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// Wraps bytes that already start with a correct 4-byte length prefix.
    pub fn from_wire(bytes: Bytes) -> Self {
        debug_assert!(bytes.len() >= 4);
        Self { bytes }
    }

    /// The frame after its length prefix: header then body.
    pub fn payload(&self) -> Bytes {
        self.bytes.slice(4..)
    }

    /// The bytes to write, length prefix included.
    pub fn wire(&self) -> &Bytes {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.len() <= 4
    }
}

/// Builds a frame by letting `fill` write header and body after a length placeholder.
pub fn build<E>(
    size_hint: usize,
    fill: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<Frame, E> {
    let mut buf = BytesMut::with_capacity(size_hint + 4);
    buf.put_i32(0);
    fill(&mut buf)?;
    let len = i32::try_from(buf.len() - 4).unwrap_or(i32::MAX);
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(Frame::from_wire(buf.freeze()))
}

/// The start of a frame: its length and up to `head_len` bytes of its payload.
#[derive(Debug)]
pub struct Head {
    /// Length prefix followed by the payload bytes read so far.
    buf: BytesMut,
    /// The payload length the prefix announced.
    len: usize,
    side: Side,
}

impl Head {
    /// The payload bytes read so far.
    pub fn payload(&self) -> &[u8] {
        &self.buf[4..]
    }

    /// Whether the whole payload has been read.
    pub fn is_complete(&self) -> bool {
        self.buf.len() == 4 + self.len
    }

    /// The frame's size on the wire, length prefix included.
    pub fn wire_len(&self) -> usize {
        4 + self.len
    }

    /// Reads more of the payload, until `head_len` bytes of it (or all of it) are in.
    pub async fn read_more<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        head_len: usize,
    ) -> Result<(), Error> {
        let want = 4 + self.len.min(head_len);
        fill(reader, &mut self.buf, want, self.side).await
    }

    /// Reads the rest of the payload.
    pub async fn complete<R: AsyncRead + Unpin>(mut self, reader: &mut R) -> Result<Frame, Error> {
        fill(reader, &mut self.buf, 4 + self.len, self.side).await?;
        Ok(Frame::from_wire(self.buf.freeze()))
    }

    /// Writes what was read and streams the rest of the frame from `reader` to `writer`.
    ///
    /// Bodies over a quarter of [`SCRATCH_BYTES`] go through `scratch`, grown once to
    /// [`SCRATCH_BYTES`] and kept by the caller: reads that large bypass the reader's buffer, so
    /// a multi-megabyte Fetch response crosses the proxy in a few large reads and writes rather
    /// than many buffer-sized ones. Connections that only carry small frames never allocate it.
    pub async fn forward<R, W>(
        self,
        reader: &mut BufReader<R>,
        writer: &mut W,
        to: Side,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        writer.write_all(&self.buf).await.map_err(Error::io(to))?;
        let rest = 4 + self.len - self.buf.len();
        let large = rest > SCRATCH_BYTES / 4;
        if large && scratch.capacity() < SCRATCH_BYTES {
            scratch.reserve_exact(SCRATCH_BYTES);
        }
        let mut copied = 0;
        while copied < rest {
            let left = rest - copied;
            let n = if large {
                scratch.clear();
                let want = left.min(scratch.capacity()) as u64;
                let n = (&mut *reader)
                    .take(want)
                    .read_buf(scratch)
                    .await
                    .map_err(Error::io(self.side))?;
                writer
                    .write_all(&scratch[..n])
                    .await
                    .map_err(Error::io(to))?;
                n
            } else {
                let chunk = reader.fill_buf().await.map_err(Error::io(self.side))?;
                let n = chunk.len().min(left);
                writer.write_all(&chunk[..n]).await.map_err(Error::io(to))?;
                reader.consume(n);
                n
            };
            if n == 0 {
                return Err(Error::Truncated {
                    side: self.side,
                    got: self.buf.len() - 4 + copied,
                    expected: self.len,
                });
            }
            copied += n;
        }
        Ok(())
    }
}

/// The largest single read and write when streaming a large frame body.
pub const SCRATCH_BYTES: usize = 256 * 1024;

/// Reads from `reader` into `buf` until it holds `want` bytes.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    want: usize,
    side: Side,
) -> Result<(), Error> {
    buf.reserve(want.saturating_sub(buf.len()));
    while buf.len() < want {
        let n = (&mut *reader)
            .take((want - buf.len()) as u64)
            .read_buf(buf)
            .await
            .map_err(Error::io(side))?;
        if n == 0 {
            return Err(Error::Truncated {
                side,
                got: buf.len().saturating_sub(4),
                expected: want - 4,
            });
        }
    }
    Ok(())
}

/// Reads a frame's length prefix and up to `head_len` bytes of its payload. `Ok(None)` is a
/// clean end of stream between frames.
pub async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    side: Side,
    head_len: usize,
) -> Result<Option<Head>, Error> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader
            .read(&mut prefix[got..])
            .await
            .map_err(Error::io(side))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(Error::Truncated {
                side,
                got,
                expected: 4,
            });
        }
        got += n;
    }
    let announced = i32::from_be_bytes(prefix);
    let len = usize::try_from(announced).map_err(|_| Error::NegativeLength {
        side,
        len: announced,
    })?;
    if len > max {
        return Err(Error::FrameTooLarge {
            side,
            len: i64::from(announced),
            max,
        });
    }
    let head = len.min(head_len);
    let mut buf = BytesMut::with_capacity(4 + head);
    buf.put_slice(&prefix);
    fill(reader, &mut buf, 4 + head, side).await?;
    Ok(Some(Head { buf, len, side }))
}

/// Reads one whole frame. `Ok(None)` is a clean end of stream between frames.
pub async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    side: Side,
) -> Result<Option<Frame>, Error> {
    match read_head(reader, max, side, usize::MAX).await? {
        Some(head) => head.complete(reader).await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Result<Option<Frame>, Error> {
        let mut reader = input;
        read(&mut reader, max, Side::Client).await
    }

    #[tokio::test]
    async fn reads_a_frame_with_its_prefix() {
        let frame = read_all(&[0, 0, 0, 3, 7, 8, 9, 1], 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.wire().as_ref(), &[0, 0, 0, 3, 7, 8, 9]);
        assert_eq!(frame.payload().as_ref(), &[7, 8, 9]);
    }

    #[tokio::test]
    async fn clean_eof_between_frames_is_none() {
        assert!(read_all(&[], 100).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_negative_lengths_are_refused_before_reading_the_body() {
        let err = read_all(&[0x7f, 0xff, 0xff, 0xff], 1024).await.unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { max: 1024, .. }),
            "{err}"
        );
        let err = read_all(&[0xff, 0xff, 0xff, 0xfe], 1024).await.unwrap_err();
        assert!(
            matches!(err, Error::NegativeLength { len: -2, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn truncation_in_prefix_or_body_is_reported() {
        let err = read_all(&[0, 0], 100).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    got: 2,
                    expected: 4,
                    ..
                }
            ),
            "{err}"
        );
        let err = read_all(&[0, 0, 0, 10, 1, 2, 3], 100).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    got: 3,
                    expected: 10,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn forward_streams_the_frame_and_reports_truncation() {
        let input: &[u8] = &[0, 0, 0, 6, 1, 2, 3, 4, 5, 6, 9];
        let mut reader = tokio::io::BufReader::with_capacity(2, input);
        let head = read_head(&mut reader, 100, Side::Upstream, 4)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.payload(), &[1, 2, 3, 4]);
        assert!(!head.is_complete());
        let mut out = Vec::new();
        head.forward(&mut reader, &mut out, Side::Client, &mut Vec::new())
            .await
            .unwrap();
        assert_eq!(out, &input[..10]);

        let cut: &[u8] = &[0, 0, 0, 6, 1, 2, 3];
        let mut reader = tokio::io::BufReader::new(cut);
        let head = read_head(&mut reader, 100, Side::Upstream, 2)
            .await
            .unwrap()
            .unwrap();
        let err = head
            .forward(&mut reader, &mut Vec::new(), Side::Client, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    got: 3,
                    expected: 6,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn large_bodies_stream_through_the_scratch_buffer_intact() {
        let body: Vec<u8> = (0..(3 * SCRATCH_BYTES + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut input = (body.len() as i32).to_be_bytes().to_vec();
        input.extend_from_slice(&body);
        input.extend_from_slice(&[0, 0, 0, 1, 42]); // the next frame stays unread
        let mut reader = tokio::io::BufReader::with_capacity(1024, input.as_slice());
        let head = read_head(&mut reader, usize::MAX, Side::Upstream, 4)
            .await
            .unwrap()
            .unwrap();
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        head.forward(&mut reader, &mut out, Side::Client, &mut scratch)
            .await
            .unwrap();
        assert_eq!(out, &input[..4 + body.len()]);
        assert!(scratch.capacity() >= SCRATCH_BYTES);
        let next = read(&mut reader, 100, Side::Upstream)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.payload().as_ref(), &[42]);
    }

    #[test]
    fn build_patches_the_length_prefix() {
        let frame = build::<()>(3, |b| {
            b.put_slice(&[1, 2, 3]);
            Ok(())
        })
        .unwrap();
        assert_eq!(frame.wire().as_ref(), &[0, 0, 0, 3, 1, 2, 3]);
    }
}
