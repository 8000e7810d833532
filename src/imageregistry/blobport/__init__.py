"""The blob port: whole blobs sent with sendfile(2) on a listener of their own.

Granian's ASGI pathsend reads a file into user space 128 KiB at a time before writing it to
the socket, so the main port can never send a blob without copying it. With the setting
`blob_listen`, a GET of a whole blob of at least `REDIRECT_MIN_SIZE` bytes on the main port
answers 307 with a signed, short-lived link (`links`) to this port, whose small HTTP/1.1
server (`server`) checks the link and hands the file to the kernel. Clients follow such
redirects already: distribution sends them for blobs held in object storage.
"""
