# message: nested.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "variables", "extracttext", "fileinto"]; foreverypart { if header :mime :contenttype "content-type" "message/rfc822" { extracttext :first 12 "t"; fileinto "m-${t}"; } }
