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

fn kernel(body: &str) -> String {
    format!(".version 9.0\n.target sm_75\n.address_size 64\n.visible .entry k(.param .u64 p)\n{{\n{body}\n}}\n")
}

/// The error of loading a kernel with `body`, and the line it names.
fn load_error(body: &str) -> (usize, String) {
    let e = Module::load(&kernel(body)).unwrap_err();
    (e.line, e.message)
}

#[test]
fn what_is_not_implemented_is_named_never_guessed() {
    let cases: [(&str, usize, &str); 17] = [
        ("\t.reg .f32 %f<2>;\n\tadd.rz.f32 %f1, %f0, %f0;\n\tret;", 7, "`.rz`"),
        ("\t.reg .b32 %r<2>;\n\tmad.s32 %r1, %r0, %r0, %r0;\n\tret;", 7, "`mad` without `.lo`, `.hi` or `.wide`"),
        ("\t.reg .b64 %rd<2>;\n\tmad.wide.u64 %rd1, %rd0, %rd0, %rd0;\n\tret;", 7, "`.wide` of 64-bit operands"),
        ("\t.reg .b32 %r<2>;\n\tmad.hi.sat.s32 %r1, %r0, %r0, %r0;\n\tret;", 7, "`.sat`"),
        ("\t.reg .f32 %f<2>;\n\tmad.rn.f32 %f1, %f0, %f0, %f0;\n\tret;", 7, "`.f32`"),
        ("\t.reg .f32 %f<2>;\n\tadd.rn.f16 %f1, %f0, %f0;\n\tret;", 7, "unsupported type `.f16`"),
        ("\t.reg .b32 %r<2>;\n\tadd.sat.s32 %r1, %r0, %r0;\n\tret;", 7, "`.sat`"),
        ("\t.reg .b32 %r<2>;\n\tadd.s32 %r1, %r0, %r5;\n\tret;", 7, "undeclared register `%r5`"),
        ("\t.reg .b32 %r<2>;\n\t.reg .b64 %rd<2>;\n\tadd.s32 %r1, %r0, %rd1;\n\tret;", 8, "64 bits"),
        ("\tbra $NOWHERE;\n\tret;", 6, "unknown label `$NOWHERE`"),
        ("\t.reg .b32 %r<2>;\n\tld.global.volatile.u32 %r1, [%r0];\n\tret;", 7, "`.volatile`"),
        ("\t.reg .b32 %r<2>;\n\tld.u32 %r1, [%r0];\n\tret;", 7, "only `.global`, `.shared` and `.param` loads"),
        ("\tmembar.gl;\n\tret;", 6, "unsupported instruction `membar.gl`"),
        ("\t.local .align 4 .b8 stack[16];\n\tret;", 6, "unsupported directive `.local`"),
        ("\t.reg .b32 %r<2>;\n\tmov.u32 %r1, %clock;\n\tret;", 7, "`%clock`"),
        ("\t.reg .b32 %r<2>;\n\tadd.s32 %r1, %r0, 1;", 7, "can run past its last instruction"),
        ("\t.reg .b32 %r<70000>;\n\tret;", 4, "more than 65536 registers"),
    ];
    for (body, line, needle) in cases {
        let (l, m) = load_error(body);
        assert!(m.contains(needle), "{body}: {m}");
        assert_eq!(l, line, "{body}: {m}");
    }
    let e = Module::load(".version 9.0\n.target sm_75\n.address_size 64\n.visible .func f() { ret; }").unwrap_err();
    assert!(e.message.contains(".func"), "{e}");
    let e = Module::load(".version 9.0\n.target sm_75\n.address_size 64\n.global .align 4 .u32 g;").unwrap_err();
    assert!(e.message.contains("`.global`"), "{e}");
    let e = Module::load(".version 9.0\n.target sm_75\n.address_size 32\n").unwrap_err();
    assert!(e.message.contains("address_size"), "{e}");
}

#[test]
fn kernel_attributes() {
    let text = ".version 9.0\n.target sm_75\n.address_size 64\n\
        .visible .entry a(.param .u32 x, .param .align 8 .b8 s[12], .param .f64 y)\n.reqntid 32, 4\n{\n\
        .reg .b32 %r<3>;\n.reg .b64 %rd<2>;\n.shared .align 4 .b8 b1[10];\n.shared .align 16 .b8 b2[4];\n\
        ld.param.u32 %r1, [s+8];\n ret;\n}\n\
        .visible .entry b()\n{\n ret;\n}\n";
    let m = Module::load(text).unwrap();
    let a = m.kernel("a").unwrap();
    let layout: Vec<_> = a.params().iter().map(|p| (p.size, p.align)).collect();
    assert_eq!(layout, [(4, 4), (12, 8), (8, 8)]);
    assert_eq!(a.max_threads_per_block(), 128);
    assert_eq!(a.required_block(), Some([32, 4, 1]));
    assert_eq!(a.static_shared_bytes(), 20, "b2 starts at 16");
    assert_eq!(a.num_regs(), 3 + 2 * 2);
    let b = m.kernel("b").unwrap();
    assert_eq!((b.params().len(), b.max_threads_per_block(), b.required_block()), (0, 1024, None));
    assert_eq!(m.kernel_names().collect::<Vec<_>>(), ["a", "b"]);
    assert!(m.kernel("c").is_none());
    // An access outside its parameter is refused when loading.
    let bad = text.replace("[s+8]", "[s+12]");
    assert!(Module::load(&bad).unwrap_err().message.contains("outside parameter `s`"));
}
