//! The layout of a `.safetensors` file: an 8-byte header length, a JSON header naming every
//! tensor's dtype, shape and byte range, then the data. The `safetensors` crate parses and checks
//! the header; this adds the checks and messages of a calibration input.

use safetensors::{Dtype, SafeTensors};

use super::{ElementType, Stored};

/// The tensors of a `.safetensors` file held in `bytes`, in name order. A header that claims
/// more bytes than the file holds, a header the `safetensors` crate refuses, a file without
/// tensors and a dtype other than F32/F16/BF16 are errors saying which.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<(String, Stored)>, String> {
    let length = bytes.get(..8).ok_or_else(|| {
        format!(
            "truncated: the file holds {} bytes, a .safetensors file starts with an 8-byte header length",
            bytes.len()
        )
    })?;
    let mut le = [0u8; 8];
    le.copy_from_slice(length);
    let claimed = u64::from_le_bytes(le);
    let after = bytes.len() - 8;
    if claimed > after as u64 {
        return Err(format!(
            "the header claims {claimed} bytes but the file holds only {after} after its 8-byte length (truncated, or \
             not a .safetensors file)"
        ));
    }
    let (header_len, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a valid .safetensors file: {e}"))?;
    let data_start = 8 + header_len;
    let mut tensors: Vec<_> = metadata.tensors().into_iter().collect();
    if tensors.is_empty() {
        return Err("holds no tensors".into());
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
        .into_iter()
        .map(|(name, info)| {
            let dtype = match info.dtype {
                Dtype::F32 => ElementType::F32,
                Dtype::F16 => ElementType::F16,
                Dtype::BF16 => ElementType::BF16,
                d => return Err(format!("tensor {name:?} has dtype {d:?}: qcalib reads F32, F16 and BF16")),
            };
            let (start, end) = info.data_offsets;
            let range = data_start.checked_add(start).zip(data_start.checked_add(end));
            let data = match range {
                Some((s, e)) if s <= e && e <= bytes.len() => s..e,
                _ => return Err(format!("tensor {name:?}: its data offsets lie outside the file")),
            };
            Ok((name, Stored { dtype, shape: info.shape.clone(), fortran_order: false, data }))
        })
        .collect()
}
