# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["variables", "fileinto"]; if header :matches "subject" "*" { set "s" "${0}"; } fileinto "${s}";
