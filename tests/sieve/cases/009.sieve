# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if false { discard; } elsif true { redirect "x@example.com"; } else { keep; }
