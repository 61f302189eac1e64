# message: nested.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "fileinto"]; foreverypart { if exists :mime "content-disposition" { fileinto "attachment-part"; } }
