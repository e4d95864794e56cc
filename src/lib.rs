//! git-credential-azdo: git over HTTPS to Azure DevOps with Microsoft Entra ID tokens.
//!
//! The client (`client`, and the std-only modules it uses: `git_credential` (git's credential
//! protocol), `answer`, `policy`, `daemon_protocol` (the client ↔ daemon messages), `config`,
//! `paths`, `secret`) is what git runs; the `daemon` holds tokens and makes every network call. See docs/ and ARCHITECTURE.md for the design.

pub mod answer;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod daemon_protocol;
pub mod git_credential;
pub mod launch;
pub mod paths;
pub mod policy;
pub mod secret;
