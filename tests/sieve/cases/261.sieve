# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "variables", "fileinto"]; set "n" ""; foreverypart { set "n" "${n}x"; if header :mime :subtype "content-type" "html" { break; } } fileinto "x${n}";
