//! dagrun-aws: dagrun on AWS.
//!
//! | module | owns |
//! | --- | --- |
//! | [`s3`] | S3 as a `Storage`: listing, concurrent reads, multipart writes, publishing tables |
//! | [`emr`] | the `emr` engine: cluster lifecycle, Spark steps, `dagrun emr gc` |
//! | [`pricing`] | instance prices from the AWS Price List API (`--refresh-prices`) |

pub mod emr;
pub mod pricing;
pub mod s3;

pub use s3::S3Storage;

/// The standard AWS configuration chain, with whatever credentials it finds registered as
/// secrets (see `dagrun_core::redact`) as they are fetched, so that no key or session token
/// is ever printed or written, whichever source (environment, profile, SSO, process) gave it.
pub(crate) async fn load_sdk_config(loader: aws_config::ConfigLoader) -> aws_config::SdkConfig {
    let sdk = loader.load().await;
    match sdk.credentials_provider() {
        Some(inner) => sdk
            .to_builder()
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(Registering(inner)))
            .build(),
        None => sdk,
    }
}

/// A credentials provider that registers what its inner provider returns as secrets.
#[derive(Debug)]
struct Registering(aws_credential_types::provider::SharedCredentialsProvider);

impl aws_credential_types::provider::ProvideCredentials for Registering {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let credentials = self.0.provide_credentials().await?;
            dagrun_core::redact::register(credentials.access_key_id());
            dagrun_core::redact::register(credentials.secret_access_key());
            if let Some(token) = credentials.session_token() {
                dagrun_core::redact::register(token);
            }
            Ok(credentials)
        })
    }
}
