//! The PTX of `kernels/*.cu`, embedded by `build.rs` (compiled by nvcc during the build, or the
//! copy committed in `kernels/ptx/` when there is no nvcc).

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The PTX of module `name`.
#[cfg(test)]
pub(crate) fn module(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(m, _)| *m == name).map(|(_, ptx)| *ptx)
}

/// The parameter types (`.u64`, `.u32`, `.f32`, `.f64`, ...) of the entry point `entry` of a
/// PTX text, in order; `None` when it has no such entry point.
#[cfg(test)]
pub(crate) fn entry_params(ptx: &str, entry: &str) -> Option<Vec<String>> {
    let head = format!(".entry {entry}(");
    let start = ptx.find(&head)? + head.len();
    let end = start + ptx[start..].find(')')?;
    let params = ptx[start..end]
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split_whitespace().nth(1).unwrap_or("").to_string())
        .collect();
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entry_parameters() {
        let ptx = ".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .f32 k_param_1\n)\n{\n}";
        assert_eq!(entry_params(ptx, "k"), Some(vec![".u64".to_string(), ".f32".to_string()]));
        assert_eq!(entry_params(ptx, "other"), None);
    }

    #[test]
    fn every_module_is_embedded_and_names_its_origin() {
        for name in ["extremes", "fake_quant", "histogram", "kl", "percentile"] {
            let ptx = module(name).unwrap_or_else(|| panic!("module {name} is not embedded"));
            assert!(ptx.contains(".version") && ptx.contains(".target sm_75"), "{name} is not compute_75 PTX");
        }
        assert!(PTX_ORIGIN == "nvcc" || PTX_ORIGIN == "kernels/ptx");
    }

    #[test]
    fn the_ptx_records_no_paths() {
        for (name, ptx) in MODULES {
            assert!(!ptx.contains(".file"), "{name}: PTX with file records (built with -lineinfo or -G?)");
            assert!(!ptx.contains("/home/") && !ptx.contains("/tmp/"), "{name}: PTX mentions a path");
        }
    }
}
