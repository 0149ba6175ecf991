"""A fault-injecting TCP proxy for the bad-network tests: a 2G-like link
between phones and the server, on loopback. Per connection and direction:
a bandwidth cap, delay (the one-way delay at connection set-up, and a
tenth of it per 512-byte chunk, as a slow radio link adds per packet),
stalls, and cuts (the connection is closed mid-request or mid-response).
Seeded: a failing run can be replayed with the same seed.

    proxy = FaultProxy(upstream_port, seed=7, kbit=50, delay_ms=300,
                       stall_p=0.02, cut_p=0.01)
    proxy.start(); ... proxy.port ...; proxy.stop()
"""
import asyncio
import random
import threading
import time


class FaultProxy:
    def __init__(self, upstream_port, seed=1, kbit=50, delay_ms=300, stall_p=0.02,
                 stall_s=(0.5, 2.0), cut_p=0.01, chunk=512, cut_first=0, host="127.0.0.1"):
        self.upstream = upstream_port
        self.rng = random.Random(seed)
        self.rate = kbit * 1000 / 8          # bytes per second
        self.delay = delay_ms / 1000.0
        self.stall_p, self.stall_s, self.cut_p = stall_p, stall_s, cut_p
        self.chunk = chunk
        self.host = host            # where phones reach it
        self.cut_first = cut_first  # the first N connections are cut mid-request
        self.stats = {"connections": 0, "cuts": 0, "stalls": 0, "bytes_up": 0, "bytes_down": 0}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()

    async def _pump(self, reader, writer, direction, peer_writer, cut_after=None):
        # Chunks go on no faster than the rate allows, each delayed a little.
        next_free = time.monotonic()
        try:
            while True:
                data = await reader.read(self.chunk)
                if not data:
                    break
                sent = self.stats["bytes_" + direction]
                if cut_after is not None and sent >= cut_after:
                    self.stats["cuts"] += 1
                    break
                if self.rng.random() < self.cut_p:
                    self.stats["cuts"] += 1
                    break
                if self.rng.random() < self.stall_p:
                    self.stats["stalls"] += 1
                    await asyncio.sleep(self.rng.uniform(*self.stall_s))
                now = time.monotonic()
                next_free = max(next_free, now) + len(data) / self.rate
                await asyncio.sleep(max(0.0, next_free - now) + self.delay / 10)
                writer.write(data)
                await writer.drain()
                self.stats["bytes_" + direction] += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            # a cut: both sides see the connection end
            for w in (writer, peer_writer):
                try:
                    w.close()
                except Exception:
                    pass

    async def _handle(self, creader, cwriter):
        self.stats["connections"] += 1
        cut_after = None
        if self.stats["connections"] <= self.cut_first:
            cut_after = self.stats["bytes_up"] + 1500  # cut well inside its first request
        await asyncio.sleep(self.delay)  # connection set-up over the link
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(self._pump(creader, swriter, "up", cwriter, cut_after),
                             self._pump(sreader, cwriter, "down", swriter))

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.server = await asyncio.start_server(self._handle, self.host, 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()
            async with self.server:
                await self.server.serve_forever()
        try:
            self.loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)
        return self

    def stop(self):
        def cancel():
            for t in asyncio.all_tasks(self.loop):
                t.cancel()
        self.loop.call_soon_threadsafe(cancel)
        self.thread.join(10)
