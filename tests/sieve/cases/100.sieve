# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["variables", "fileinto"]; if header :matches "subject" "Meeting *" { fileinto "m-${1}"; }
