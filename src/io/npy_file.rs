//! The layout of a `.npy` file: the magic string, the format version, the header length, the
//! header ([`npy_header`](super::npy_header)), then the data.

use std::borrow::Cow;

use super::npy_header;
use super::{ElementType, Stored};

/// The tensor of a `.npy` file held in `bytes`: its element type, shape, order and where its
/// data lies. Every inconsistency (bad magic, an unknown version, a header longer than the file,
/// a header numpy would not read, a dtype other than f32/f16, data of the wrong length) is an
/// error saying which.
pub(crate) fn parse(bytes: &[u8]) -> Result<Stored, String> {
    let magic = bytes.get(..8).ok_or_else(|| format!("truncated .npy header: the file holds {} bytes", bytes.len()))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (major, minor) = (magic[6], magic[7]);
    let length_bytes = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => return Err(format!("unsupported .npy format version {major}.{minor} (numpy writes 1.0, 2.0 and 3.0)")),
    };
    let start = 8 + length_bytes;
    let length = bytes.get(8..start).ok_or("truncated .npy header: the file ends in the header length")?;
    let header_len = length.iter().rev().fold(0usize, |n, &b| (n << 8) | b as usize);
    let end = start.checked_add(header_len).filter(|&end| end <= bytes.len()).ok_or_else(|| {
        format!(
            "the .npy header claims {header_len} bytes but the file holds only {} after its {start}-byte prefix \
             (truncated header)",
            bytes.len() - start
        )
    })?;
    let raw = &bytes[start..end];
    let text: Cow<'_, str> = if major == 3 {
        Cow::Borrowed(std::str::from_utf8(raw).map_err(|e| format!("the .npy 3.0 header is not UTF-8: {e}"))?)
    } else {
        // Versions 1.0 and 2.0 are latin-1: every byte is the character of its value.
        Cow::Owned(raw.iter().map(|&b| b as char).collect())
    };
    // numpy refuses longer headers unless told to trust the file (`max_header_size`).
    const NUMPY_MAX_HEADER: usize = 10_000;
    let chars = text.chars().count();
    if chars > NUMPY_MAX_HEADER {
        return Err(format!(
            "the .npy header holds {chars} characters, more than the {NUMPY_MAX_HEADER} numpy reads by default"
        ));
    }
    let h = npy_header::parse(&text, major < 3).map_err(|e| format!("the .npy header is not one numpy writes: {e}"))?;
    let dtype = match h.descr.as_str() {
        "<f4" | "=f4" => ElementType::F32,
        "<f2" | "=f2" | "|f2" => ElementType::F16,
        d => {
            return Err(format!(
                "unsupported dtype {d:?}: qcalib reads little-endian float32 ('<f4') and float16 ('<f2')"
            ));
        }
    };
    let numel = h.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("the shape overflows")?;
    let want = numel.checked_mul(dtype.size()).ok_or("the shape overflows")?;
    let data_len = bytes.len() - end;
    if data_len != want {
        return Err(format!(
            "the data holds {data_len} bytes but the shape {:?} of {} needs {want}{}",
            h.shape,
            dtype.name(),
            if data_len < want { " (truncated file)" } else { "" }
        ));
    }
    Ok(Stored { dtype, shape: h.shape, fortran_order: h.fortran_order, data: end..bytes.len() })
}
