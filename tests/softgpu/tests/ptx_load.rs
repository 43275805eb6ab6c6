//! Every module of `kernels/ptx/` loads, and a module with an instruction the interpreter does
//! not implement does not, naming it and its line.

use std::path::PathBuf;

use softgpu::ptx::Module;

fn ptx_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../kernels/ptx")
}

fn modules() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(ptx_dir()).expect("kernels/ptx") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "ptx") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read_to_string(&path).expect("read")));
        }
    }
    out.sort();
    assert!(out.len() >= 5, "found {} modules", out.len());
    out
}

#[test]
fn every_module_of_kernels_ptx_loads() {
    for (name, text) in modules() {
        let m = Module::load(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let entries = text.matches(".visible .entry").count();
        assert_eq!(m.kernel_names().count(), entries, "{name}");
        for k in m.kernel_names() {
            let k = m.kernel(k).unwrap();
            assert!(k.instruction_count() > 0);
            assert_eq!(k.max_threads_per_block(), 256, "{name}: {}", k.name());
        }
    }
}

#[test]
fn parameter_layouts_match_the_entries() {
    let text = std::fs::read_to_string(ptx_dir().join("extremes.ptx")).unwrap();
    let m = Module::load(&text).unwrap();
    let k = m.kernel("extremes_rows_f32").unwrap();
    let sizes: Vec<_> = k.params().iter().map(|p| (p.size, p.align)).collect();
    assert_eq!(sizes, [(8, 8), (8, 8), (8, 8), (8, 8), (8, 8), (4, 4), (8, 8)]);
    assert_eq!(k.static_shared_bytes(), 0);
    let text = std::fs::read_to_string(ptx_dir().join("percentile.ptx")).unwrap();
    let k = Module::load(&text).unwrap().kernel("first_bins_reaching").unwrap();
    assert_eq!(k.static_shared_bytes(), 2048 + 128);
    assert_eq!(k.params().len(), 5);
}

#[test]
fn an_unknown_instruction_fails_naming_it_and_its_line() {
    let text = std::fs::read_to_string(ptx_dir().join("extremes.ptx")).unwrap();
    let line = text.lines().position(|l| l.trim_start().starts_with("max.f32")).unwrap() + 1;
    let mutated: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == line { l.replacen("max.f32", "max.xorsign.abs.f32", 1) } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    let e = Module::load(&mutated).unwrap_err();
    assert_eq!(e.line, line);
    assert!(e.message.contains("`.xorsign`") && e.message.contains("max.xorsign.abs.f32"), "{e}");

    let mutated = text.replacen("\tmax.f32", "\tfrobnicate.f32", 1);
    let e = Module::load(&mutated).unwrap_err();
    assert_eq!(e.line, line);
    assert_eq!(e.message, "unsupported instruction `frobnicate.f32`");
}
