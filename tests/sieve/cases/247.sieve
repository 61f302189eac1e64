# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime"]; if header :mime :anychild :param "filename" "content-disposition" "invoice.pdf" { discard; }
