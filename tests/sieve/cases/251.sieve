# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime", "variables", "fileinto"]; if header :mime :matches :type "content-type" "*" { fileinto "type-${0}"; }
