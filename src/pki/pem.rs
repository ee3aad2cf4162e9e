//! PEM text of certificates, as principald hands them out.

/// PEM (LF line endings) of a DER certificate.
pub fn pem_of(der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new("CERTIFICATE", der.to_vec()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}
