//! Reading calibration batches from files: `.npy` (one tensor, f32 or f16, C or Fortran order)
//! and `.safetensors` (named tensors of F32, F16 or BF16).
//!
//! ```no_run
//! use qcalib::io::{read_batch, Batch};
//! use qcalib::{MinMaxObserver, Observer, QuantConfig};
//! let mut obs = MinMaxObserver::new(QuantConfig::default())?;
//! if let Batch::Single(t) = read_batch("activations.b0.npy".as_ref())? {
//!     obs.observe_tensor(&t.view())?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor::TensorView;
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn, ShapeBuilder};

/// A tensor read from a file.
#[derive(Clone, Debug)]
pub enum OwnedTensor {
    /// f32 values.
    F32(ArrayD<f32>),
    /// f16 values.
    F16(ArrayD<f16>),
    /// bf16 values.
    BF16(ArrayD<bf16>),
}

impl OwnedTensor {
    /// A view for the observers.
    pub fn view(&self) -> TensorView<'_> {
        match self {
            OwnedTensor::F32(a) => a.into(),
            OwnedTensor::F16(a) => a.into(),
            OwnedTensor::BF16(a) => a.into(),
        }
    }
}

/// One calibration batch.
#[derive(Clone, Debug)]
pub enum Batch {
    /// A `.npy` file: one tensor.
    Single(OwnedTensor),
    /// A `.safetensors` file: tensors by name, in name order.
    Named(Vec<(String, OwnedTensor)>),
}

/// Reads one batch; the file's extension (`.npy`, `.safetensors`) says which format. Every
/// problem (unreadable, truncated, malformed, an unsupported dtype) is an [`Error::Input`]
/// naming the file.
pub fn read_batch(path: &Path) -> Result<Batch> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let read = match ext {
        "npy" => read_npy(path).map(Batch::Single),
        "safetensors" => read_safetensors(path).map(Batch::Named),
        _ => Err("not a .npy or .safetensors file".into()),
    };
    read.map_err(|reason| Error::Input { path: path.display().to_string(), reason })
}

/// Reads a `.npy` file: one tensor.
pub fn read_npy_file(path: &Path) -> Result<OwnedTensor> {
    read_npy(path).map_err(|reason| Error::Input { path: path.display().to_string(), reason })
}

/// The fields of a `.npy` header that matter here.
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

fn read_npy(path: &Path) -> std::result::Result<OwnedTensor, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(header_error)?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let header_len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(header_error)?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(header_error)?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let prefix = if magic[6] == 1 { 10 } else { 12 };
    if (prefix + header_len) as u64 > file_len {
        return Err("truncated .npy header".into());
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).map_err(header_error)?;
    let header = String::from_utf8(header).map_err(|_| "the .npy header is not text".to_string())?;
    let h = parse_npy_header(&header)?;
    let numel = h.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("the shape overflows")?;
    let (item, kind) = match h.descr.as_str() {
        "<f4" | "=f4" => (4, "f32"),
        "<f2" | "=f2" | "|f2" => (2, "f16"),
        d => {
            return Err(format!(
                "unsupported dtype {d:?}: qcalib reads little-endian float32 ('<f4') and float16 ('<f2')"
            ));
        }
    };
    let data_len = (file_len - (prefix + header_len) as u64) as usize;
    let want = numel.checked_mul(item).ok_or("the shape overflows")?;
    if data_len != want {
        return Err(format!(
            "the data holds {data_len} bytes but the shape {:?} of {kind} needs {want}{}",
            h.shape,
            if data_len < want { " (truncated file)" } else { "" }
        ));
    }
    let shape = if h.fortran_order { IxDyn(&h.shape).f() } else { IxDyn(&h.shape).into_shape_with_order() };
    let bad_shape = |e: ndarray::ShapeError| e.to_string();
    Ok(match kind {
        "f32" => {
            let mut v = vec![0f32; numel];
            r.read_exact(bytemuck::cast_slice_mut(&mut v)).map_err(|e| e.to_string())?;
            OwnedTensor::F32(ArrayD::from_shape_vec(shape, v).map_err(bad_shape)?)
        }
        _ => {
            let mut v = vec![f16::ZERO; numel];
            r.read_exact(bytemuck::cast_slice_mut(&mut v)).map_err(|e| e.to_string())?;
            OwnedTensor::F16(ArrayD::from_shape_vec(shape, v).map_err(bad_shape)?)
        }
    })
}

/// A failed read of the `.npy` header: "truncated" when the file ends, else what the system says
/// (e.g. the path is a directory).
fn header_error(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { "truncated .npy header".into() } else { e.to_string() }
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_npy_header(h: &str) -> std::result::Result<NpyHeader, String> {
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = h.find(&format!("'{key}'")).ok_or(format!("the .npy header has no '{key}'"))?;
        let rest = &h[at + key.len() + 2..];
        let colon = rest.find(':').ok_or(format!("malformed '{key}' in the .npy header"))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("malformed 'descr' in the .npy header")?
        .to_string();
    let fortran_order = field("fortran_order")?.starts_with("True");
    let shape = field("shape")?;
    let shape =
        shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("malformed 'shape' in the .npy header")?;
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad dimension {s:?} in the .npy header")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(NpyHeader { descr, fortran_order, shape })
}

fn read_safetensors(path: &Path) -> std::result::Result<Vec<(String, OwnedTensor)>, String> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("not a valid .safetensors file: {e}"))?;
    let mut out = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        let t = st.tensor(&name).map_err(|e| format!("tensor {name:?}: {e}"))?;
        let shape = IxDyn(t.shape());
        let bad = |e: ndarray::ShapeError| format!("tensor {name:?}: {e}");
        let tensor = match t.dtype() {
            Dtype::F32 => {
                OwnedTensor::F32(ArrayD::from_shape_vec(shape, bytemuck::pod_collect_to_vec(t.data())).map_err(bad)?)
            }
            Dtype::F16 => {
                OwnedTensor::F16(ArrayD::from_shape_vec(shape, bytemuck::pod_collect_to_vec(t.data())).map_err(bad)?)
            }
            Dtype::BF16 => {
                OwnedTensor::BF16(ArrayD::from_shape_vec(shape, bytemuck::pod_collect_to_vec(t.data())).map_err(bad)?)
            }
            d => return Err(format!("tensor {name:?} has dtype {d:?}: qcalib reads F32, F16 and BF16")),
        };
        out.push((name, tensor));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers() {
        let h = parse_npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }").unwrap();
        assert_eq!((h.descr.as_str(), h.fortran_order, h.shape), ("<f4", false, vec![2, 3]));
        let h = parse_npy_header("{'descr': '<f2', 'fortran_order': True, 'shape': (5,), }").unwrap();
        assert_eq!((h.fortran_order, h.shape), (true, vec![5]));
        let h = parse_npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }").unwrap();
        assert!(h.shape.is_empty());
        assert!(parse_npy_header("{'descr': '<f4'}").is_err());
    }
}
