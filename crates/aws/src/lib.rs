//! dagrun-aws: dagrun on AWS.
//!
//! | module | owns |
//! | --- | --- |
//! | [`s3`] | S3 as a `Storage`: listing, concurrent reads, multipart writes, publishing tables |
//! | [`emr`] | the `emr` engine: cluster lifecycle, Spark steps, `dagrun emr gc` |

pub mod emr;
pub mod s3;

pub use s3::S3Storage;
