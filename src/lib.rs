//! git-credential-azdo: git over HTTPS to Azure DevOps with Microsoft Entra ID tokens.
//!
//! The client (`client`, and the std-only modules it uses: `protocol`, `answer`, `policy`,
//! `ipc`, `config`, `paths`, `secret`) is what git runs; the `daemon` holds tokens and makes every
//! network call. See docs/ and ARCHITECTURE.md for the design.

pub mod answer;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod ipc;
pub mod launch;
pub mod paths;
pub mod policy;
pub mod protocol;
pub mod secret;
