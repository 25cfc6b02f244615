//! Host bindings generated from `wit/` (package `kimberlite:projection@0.1.0`).
//!
//! Every import is `trappable`: a host function returns `wasmtime::Result`, and an `Err`
//! traps the guest (the engine turns it into a fault or an error) instead of panicking
//! the host.

pub(crate) mod projection {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "kimberlite:projection/projection@0.1.0",
        imports: { default: trappable },
    });
}

pub(crate) mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "kimberlite:projection/policy@0.1.0",
        imports: { default: trappable },
        // One set of types and one `config` implementation for both worlds.
        with: {
            "kimberlite:projection/types": super::projection::kimberlite::projection::types,
            "kimberlite:projection/config": super::projection::kimberlite::projection::config,
        },
    });
}
