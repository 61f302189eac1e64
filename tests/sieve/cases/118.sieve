# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["variables", "fileinto"]; set "n" "1"; if header :matches "x-count" "4*" { fileinto "c${1}"; }
