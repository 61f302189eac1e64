# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime", "variables", "fileinto"]; if header :mime :matches :contenttype "content-type" "*/*" { fileinto "${1}-${2}"; }
