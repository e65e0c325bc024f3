//! The CLI's contracts: outputs, manifests, overwrite protection, help.
