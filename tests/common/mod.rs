//! Test-side mock servers shared by the integration tests: a throw-away CA
//! (`tls`), a mock Microsoft Entra ID (`entra`), a mock Azure DevOps in
//! front of `git http-backend` (`ado`), mock managed-identity endpoints
//! (`imds`: Azure VM IMDS and App Service) and a mock of the legacy Azure DevOps
//! OAuth service, app.vssps.visualstudio.com (`vssps`). Each server runs on its own
//! background tokio runtime, binds 127.0.0.1 only, and stops when its handle
//! is dropped. `load` is the benchmarks' load generator for the daemon's socket.
//! `gits` finds the three gits the tests run (2.39, 2.47, 2.55).
//! `secrets` is the ledger every mock records the secrets it issues or sees into, and the
//! scan `harness::World` runs for them over everything the product wrote.
#![allow(dead_code, unused_imports)]

pub mod ado;
pub mod entra;
pub mod gits;
pub mod harness;
pub mod imds;
pub mod in_process;
pub mod load;
pub mod oidc;
pub mod proxy;
pub mod requires;
pub mod secrets;
pub mod tls;
pub mod vssps;

pub use ado::{AdoRequest, MockAdo, Scheme};
pub use entra::{
    ADO_RESOURCE, AppIdentity, EntraMinter, EntraStats, EntraValidator, Fault, MockEntra,
    TokenInfo, TokenRequest,
};
pub use imds::{IdentityRef, MiEndpoint, MiRequest, MockImds};
pub use secrets::{Finding, SecretKind, SecretRecord, Secrets};
pub use tls::TestCa;
pub use vssps::{LegacyTokenInfo, MockVssps, VsspsStats, VsspsValidator};
