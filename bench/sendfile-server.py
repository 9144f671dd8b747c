"""A static release server for bench:fetch that sends file bodies with
sendfile(2), as nginx and CDNs do, so that on a small host the server's own
copying takes little of the CPU both timed clients need. GET with Range
(bytes=N-), files under argv[1]; prints its port."""
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.realpath(sys.argv[1])


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = os.path.realpath(os.path.join(ROOT, self.path.split('?')[0].lstrip('/')))
        try:
            if not path.startswith(ROOT + os.sep):
                raise OSError('outside the root')
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            self.send_response(404)
            self.send_header('content-length', '0')
            self.end_headers()
            return
        try:
            size = os.fstat(fd).st_size
            m = re.fullmatch(r'bytes=(\d+)-', self.headers.get('range') or '')
            start = int(m.group(1)) if m else 0
            self.send_response(206 if m else 200)
            self.send_header('content-length', str(size - start))
            if m:
                self.send_header('content-range', f'bytes {start}-{size - 1}/{size}')
            self.end_headers()
            self.wfile.flush()
            offset = start
            while offset < size:
                sent = os.sendfile(self.connection.fileno(), fd, offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        finally:
            os.close(fd)


server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
