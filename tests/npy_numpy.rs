//! `.npy` headers against numpy itself: every file numpy writes (versions 1.0, 2.0 and 3.0, C and
//! Fortran order, f32 and f16, every rank) reads as numpy reads it; hand-written headers and
//! thousands of random mutations of real ones are never accepted where numpy refuses them, nor
//! read with another dtype, order or shape. Where qcalib is stricter than numpy (repeated keys,
//! which numpy lets the last win, and Python expressions numpy evaluates but never writes), the
//! cases are listed.
//!
//! Needs python3 with numpy: `PYTHONPATH` as given, plus `QCALIB_NUMPY` (a `pip install --target`
//! folder, by default `~/.cache/qcalib/numpy`). Without numpy the test says SKIPPED, unless
//! `QCALIB_REQUIRE_NUMPY` is set (as `.ci/run` does), where it fails.
#![cfg(feature = "io")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use qcalib::TensorView;
use qcalib::io::{Batch, Format, Tensors};
use serde_json::{Value, json};

/// Writes the files of `cases.json` and numpy's verdict on each (`verdicts.json`); with the
/// argument `save`, first writes the arrays numpy itself saves.
const SCRIPT: &str = r#"
import io, json, os, sys, warnings
import numpy as np
try:
    import numpy.lib._format_impl as F  # numpy 2
except ImportError:
    from numpy.lib import format as F  # numpy 1
read_header = F._read_array_header  # what np.load runs on the header
warnings.simplefilter("ignore")
dir = sys.argv[1]
cases = json.load(open(os.path.join(dir, "cases.json")))
if sys.argv[2] == "save":
    k = 0
    for version in [(1, 0), (2, 0), (3, 0)]:
        for dtype in ["<f4", "<f2"]:
            for shape in [(), (0,), (5,), (2, 3), (3, 1, 4), (2, 0, 3), (1, 2, 1, 2, 1)]:
                for order in "CF":
                    a = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape, order=order)
                    name = "saved-%d.npy" % k
                    k += 1
                    with open(os.path.join(dir, name), "wb") as f:
                        F.write_array(f, a, version=version)
                    cases.append({"name": name, "saved": True})
verdicts = []
for case in cases:
    path = os.path.join(dir, case["name"])
    if not case.get("saved"):
        header = case["header"]
        version = tuple(case["version"])
        raw = header.encode("utf-8" if version == (3, 0) else "latin-1")
        length = len(raw).to_bytes(2 if version == (1, 0) else 4, "little")
        data = b""
        try:
            shape, fortran, dtype = read_header(io.BytesIO(length + raw), version)
            n = int(np.prod(shape)) if all(x >= 0 for x in shape) else 0
            if n * dtype.itemsize <= 1 << 20:
                data = bytes(n * dtype.itemsize)
        except Exception:
            data = bytes(case.get("f32_elements", 0) * 4)
        with open(path, "wb") as f:
            f.write(b"\x93NUMPY" + bytes(version) + length + raw + data)
    try:
        a = np.load(path, allow_pickle=False)
        with open(path, "rb") as f:
            version = F.read_magic(f)
            shape, fortran, dtype = read_header(f, version)
        verdicts.append({"name": case["name"], "ok": True, "descr": dtype.str, "fortran": bool(fortran),
                         "shape": [int(x) for x in shape], "values": [float(x) for x in a.ravel(order="C")[:64]]})
    except Exception as e:
        verdicts.append({"name": case["name"], "ok": False, "error": repr(e)[:200]})
json.dump(verdicts, open(os.path.join(dir, "verdicts.json"), "w"))
"#;

/// The python3 to run numpy with, or `None` (SKIPPED) when numpy is not available.
fn numpy_python() -> Option<Command> {
    let target = std::env::var_os("QCALIB_NUMPY")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/qcalib/numpy")));
    let mut path =
        std::env::var_os("PYTHONPATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    path.extend(target);
    let pythonpath = std::env::join_paths(path).ok()?;
    let probe = Command::new("python3").env("PYTHONPATH", &pythonpath).args(["-c", "import numpy"]).output();
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        let mut c = Command::new("python3");
        c.env("PYTHONPATH", pythonpath);
        return Some(c);
    }
    if std::env::var_os("QCALIB_REQUIRE_NUMPY").is_some() {
        panic!("QCALIB_REQUIRE_NUMPY is set but python3 cannot import numpy: {probe:?}");
    }
    eprintln!("SKIPPED: python3 with numpy not found (set QCALIB_NUMPY to a folder that holds it)");
    None
}

fn scratch(test: &str) -> PathBuf {
    common::scratch("npy-numpy", test)
}

/// Has numpy write and judge `cases` (and, with `save`, arrays of its own) in `dir`; gives
/// numpy's verdicts by file name.
fn numpy_verdicts(mut python: Command, dir: &Path, cases: &[Value], save: bool) -> Vec<Value> {
    std::fs::write(dir.join("cases.json"), Value::Array(cases.to_vec()).to_string()).unwrap();
    let o = python.args(["-c", SCRIPT]).arg(dir).arg(if save { "save" } else { "judge" }).output().unwrap();
    assert!(o.status.success(), "numpy: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(dir.join("verdicts.json")).unwrap()).unwrap()
}

/// What qcalib reads from a file: `Ok((dtype, fortran, shape, first values in row-major
/// order))` or the error.
fn qcalib_reads(path: &Path) -> Result<(String, bool, Vec<usize>, Vec<f64>), String> {
    let batch = Batch::from_bytes(std::fs::read(path).unwrap(), Format::Npy).map_err(|e| e.to_string())?;
    let Tensors::Single(t) = batch.tensors().map_err(|e| e.to_string())? else { panic!("one tensor") };
    // A Fortran-order file is a view whose transpose is row-major (on more than one long axis).
    Ok(match &t {
        TensorView::F32(v) => (
            "<f4".into(),
            v.t().is_standard_layout(),
            v.shape().to_vec(),
            v.iter().take(64).map(|&x| x as f64).collect(),
        ),
        TensorView::F16(v) => (
            "<f2".into(),
            v.t().is_standard_layout(),
            v.shape().to_vec(),
            v.iter().take(64).map(|x| x.to_f64()).collect(),
        ),
        TensorView::BF16(_) => panic!("a .npy holds no bf16"),
    })
}

/// Compares qcalib's reading of each file with numpy's verdict. Returns the names qcalib refused
/// where numpy accepted.
fn compare(dir: &Path, verdicts: &[Value]) -> Vec<String> {
    let mut stricter = Vec::new();
    for v in verdicts {
        let name = v["name"].as_str().unwrap();
        let ours = qcalib_reads(&dir.join(name));
        match (v["ok"].as_bool().unwrap(), ours) {
            (true, Ok((descr, fortran, shape, values))) => {
                let shape_np: Vec<usize> =
                    v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
                assert_eq!(shape, shape_np, "{name}: shape");
                let descr_np = v["descr"].as_str().unwrap();
                assert_eq!(descr, descr_np, "{name}: dtype");
                // The order shows in the strides of a non-empty tensor with two long axes or more.
                let long_axes = shape.iter().filter(|&&d| d > 1).count();
                if long_axes > 1 && !shape.contains(&0) {
                    assert_eq!(fortran, v["fortran"].as_bool().unwrap(), "{name}: order");
                }
                let values_np: Vec<f64> = v["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                assert_eq!(values, values_np, "{name}: values");
            }
            (false, Ok(read)) => panic!("{name}: qcalib read {read:?} where numpy refused: {}", v["error"]),
            (true, Err(_)) => stricter.push(name.to_string()),
            (false, Err(_)) => {}
        }
    }
    stricter
}

fn case(name: &str, header: &str, version: u8) -> Value {
    json!({"name": name, "header": header, "version": [version, 0]})
}

#[test]
fn headers_read_as_numpy_reads_them() {
    let Some(python) = numpy_python() else { return };
    let dir = scratch("cases");
    let std = |shape: &str| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
    let same = [
        case("double-quotes", "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 3)}", 1),
        case("mixed-quotes", "{'descr': \"<f2\", \"fortran_order\": True, 'shape': (3, 2,)}", 2),
        case("key-order", "{'shape': (4,), 'descr': '<f4', 'fortran_order': False}", 1),
        case("whitespace", "  {\n'descr'\t:  '<f4' ,\r\n 'fortran_order' : True , 'shape' : ( 2 , 2 ) , }  \n\n", 1),
        case("no-trailing-comma", "{'descr': '<f4', 'fortran_order': False, 'shape': (7,)}", 3),
        case("underscores", "{'descr': '<f4', 'fortran_order': False, 'shape': (1_0, 00), }", 1),
        case("python2-longs", "{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 4L), }", 1),
        case("utf8-padding", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }       \n", 3),
        case("truthy", &std("(2,)").replace("False", "Truthy"), 1),
        case("one", &std("(2,)").replace("False", "1"), 1),
        case("trailing-text", &std("(2,)").replace("}\n", "} junk\n"), 1),
        case("trailing-brace", &std("(2,)").replace("}\n", "}}\n"), 1),
        case("extra-key", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 1),
        case("missing-key", "{'descr': '<f4', 'fortran_order': False}", 1),
        case("int-shape", &std("2"), 1),
        case("paren-shape", &std("(2)"), 1),
        case("list-shape", &std("[2]"), 1),
        case("negative", &std("(-2,)"), 1),
        case("float-dim", &std("(2.0,)"), 1),
        case("longs-in-v3", "{'descr': '<f4', 'fortran_order': False, 'shape': (3L,), }", 3),
        case("not-a-dict", "('<f4', False, (2,))", 1),
        case("empty", "", 1),
        case("bool-dim", &std("(True,)"), 1),
        json!({"name": "too-long", "header": format!("{}{}\n", std("(2,)").trim_end(), " ".repeat(10_001)),
               "version": [2, 0], "f32_elements": 2}),
    ];
    // numpy accepts these; qcalib refuses them on purpose.
    let stricter = [
        case("repeated-key", "{'descr': '<f4', 'shape': (9,), 'fortran_order': False, 'shape': (2,)}", 1),
        case("hex-dim", &std("(0x2,)"), 1),
        case("escape", "{'descr': '\\x3cf4', 'fortran_order': False, 'shape': (2,), }", 1),
        case("comment", "{'descr': '<f4', # the dtype\n 'fortran_order': False, 'shape': (2,), }", 1),
        case("prefix", "{'descr': u'<f4', 'fortran_order': False, 'shape': (2,), }", 1),
        case("parenthesised", "{'descr': ('<f4'), 'fortran_order': (False), 'shape': (2,), }", 1),
        case("concatenated", "{'descr': '<' 'f4', 'fortran_order': False, 'shape': (2,), }", 1),
        case("spaced-long", "{'descr': '<f4', 'fortran_order': False, 'shape': (3 L,), }", 1),
        case("plus", &std("(+2,)"), 1),
    ];
    // numpy reads these; qcalib reads only little-endian f32 and f16.
    let other_dtypes = [
        case("f8", "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 1),
        case("big-endian", "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 1),
    ];
    let all: Vec<Value> = same.iter().chain(&stricter).chain(&other_dtypes).cloned().collect();
    let verdicts = numpy_verdicts(python, &dir, &all, true);
    let saved = verdicts.iter().filter(|v| v["name"].as_str().unwrap().starts_with("saved-")).count();
    assert_eq!(saved, 3 * 2 * 7 * 2);
    let refused = compare(&dir, &verdicts);
    let mut expected: Vec<String> =
        stricter.iter().chain(&other_dtypes).map(|c| c["name"].as_str().unwrap().to_string()).collect();
    expected.sort();
    let mut refused_sorted = refused.clone();
    refused_sorted.sort();
    assert_eq!(refused_sorted, expected, "qcalib refuses exactly the listed headers numpy accepts");
    // The cases numpy accepts and refuses are the ones this test says.
    let accepted = |name: &str| verdicts.iter().find(|v| v["name"] == name).unwrap()["ok"].as_bool().unwrap();
    for name in ["double-quotes", "whitespace", "python2-longs", "underscores"] {
        assert!(accepted(name), "numpy refused {name}");
    }
    for name in ["truthy", "trailing-text", "extra-key", "longs-in-v3", "too-long"] {
        assert!(!accepted(name), "numpy accepted {name}");
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_mutations_of_real_headers_are_never_read_where_numpy_refuses() {
    let Some(python) = numpy_python() else { return };
    let dir = scratch("mutations");
    let seeds = [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': '<f2', 'fortran_order': True, 'shape': (4, 1, 2), }",
        "{\"descr\": \"<f4\", \"fortran_order\": True, \"shape\": (3,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
    ];
    let alphabet: Vec<char> =
        "{}()[],:'\" \t\n0123456789_LTFalseTrudescrfortan_ordershape<>=|f24x#\\-+.".chars().collect();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut cases = Vec::new();
    for i in 0..4000 {
        let mut h: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
        let edits = if rng.below(3) == 0 { 2 + rng.below(3) } else { 1 };
        for _ in 0..edits {
            let at = rng.below(h.len() + 1);
            match rng.below(7) {
                0 if at < h.len() => {
                    h.remove(at);
                }
                1 if at < h.len() => h[at] = alphabet[rng.below(alphabet.len())],
                2 if !h.is_empty() => {
                    // A copy of another piece of the header (a repeated key, a second tuple).
                    let from = rng.below(h.len());
                    let len = 1 + rng.below(12).min(h.len() - from - 1);
                    let piece: Vec<char> = h[from..from + len].to_vec();
                    h.splice(at..at, piece);
                }
                3 => h.insert(at, [' ', '\t', '\n', '\r', '\x0c'][rng.below(5)]),
                4 => {
                    // One quote of the other kind.
                    if let Some(q) = h.iter_mut().skip(at).find(|c| **c == '\'' || **c == '"') {
                        *q = if *q == '\'' { '"' } else { '\'' };
                    }
                }
                5 => {
                    if let Some(d) = h.iter_mut().skip(at).find(|c| c.is_ascii_digit()) {
                        *d = char::from(b'0' + rng.below(10) as u8);
                    }
                }
                _ => h.insert(at, alphabet[rng.below(alphabet.len())]),
            }
        }
        let version = [1u8, 2, 3][rng.below(3)];
        cases.push(case(&format!("m{i}.npy"), &h.into_iter().collect::<String>(), version));
    }
    let verdicts = numpy_verdicts(python, &dir, &cases, false);
    let stricter = compare(&dir, &verdicts);
    // What qcalib refused that numpy read: dtype spellings it does not take (numpy reads `f4`, `<f`,
    // `<f8`…; qcalib `<f4`, `=f4`, `<f2`, `=f2`, `|f2`) and header syntax numpy evaluates but never
    // writes (string prefixes, signs, comments, repeated keys…).
    let (dtypes, syntax): (Vec<&String>, Vec<&String>) = stricter
        .iter()
        .partition(|name| qcalib_reads(&dir.join(name.as_str())).unwrap_err().contains("unsupported dtype"));
    for name in syntax.iter().take(10) {
        let c = cases.iter().find(|c| c["name"] == name.as_str()).unwrap();
        eprintln!(
            "  refused, numpy reads it: {} ({})",
            c["header"],
            qcalib_reads(&dir.join(name.as_str())).unwrap_err()
        );
    }
    let both = verdicts.iter().filter(|v| v["ok"] == true).count() - stricter.len();
    eprintln!(
        "{} mutated headers: numpy read {}, qcalib read {both} of them the same way and refused {} for their dtype and \
         {} for their syntax; none that numpy refused",
        cases.len(),
        both + stricter.len(),
        dtypes.len(),
        syntax.len()
    );
    assert!(both > 500, "too few mutations read: the comparison tests little");
}
