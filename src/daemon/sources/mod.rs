//! Where tokens come from, one module per source: people through Entra ID (`entra`: device
//! code, browser, refresh tokens), people through a legacy Azure DevOps OAuth app (`legacy`),
//! and build agents' own identities (`machine`: managed identity, service principal, workload
//! identity federation). Each turns its credentials into an Azure DevOps access token; the
//! broker decides when to ask.

pub mod entra;
pub mod legacy;
pub mod machine;
