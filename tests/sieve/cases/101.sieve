# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["variables", "fileinto"]; if address :matches "from" "*@*" { fileinto "from-${2}"; }
