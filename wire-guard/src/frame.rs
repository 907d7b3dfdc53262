//! Length-prefixed Kafka frames.
//!
//! A frame is kept as the bytes received, length prefix included, so a frame no policy touches
//! is forwarded with a single write of the original bytes. The length is checked against the
//! configured maximum before any buffer is allocated for the body.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

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

/// Reads one frame. `Ok(None)` is a clean end of stream between frames.
pub async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    side: Side,
) -> Result<Option<Frame>, Error> {
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
    let mut buf = BytesMut::with_capacity(4 + len);
    buf.put_slice(&prefix);
    while buf.len() < 4 + len {
        let want = (4 + len - buf.len()) as u64;
        let n = (&mut *reader)
            .take(want)
            .read_buf(&mut buf)
            .await
            .map_err(Error::io(side))?;
        if n == 0 {
            return Err(Error::Truncated {
                side,
                got: buf.len() - 4,
                expected: len,
            });
        }
    }
    Ok(Some(Frame::from_wire(buf.freeze())))
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
