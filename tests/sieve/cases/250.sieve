# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime"]; if exists :mime "content-disposition" { discard; }
