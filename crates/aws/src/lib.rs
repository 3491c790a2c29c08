//! dagrun-aws: dagrun on AWS.
//!
//! | module | owns |
//! | --- | --- |
//! | [`s3`] | S3 as a `Storage`: listing, concurrent reads, multipart writes, publishing tables |

pub mod s3;

pub use s3::S3Storage;
