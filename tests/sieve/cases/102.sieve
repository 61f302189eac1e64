# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["variables", "fileinto"]; if header :matches "subject" "* * at *" { fileinto "${3}-${2}-${1}"; }
