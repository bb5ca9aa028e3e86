// Publishes one message with headers to JetStream over the plain NATS protocol and waits for
// the stream's ack: enough for the test's poison message, without a NATS client library.
import net from "node:net";

export function publish({ port, subject, headers, payload, timeoutMs = 5000 }) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const inbox = "_INBOX.browser_test_" + Math.random().toString(36).slice(2);
    const headerText = "NATS/1.0\r\n" +
      Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n";
    const head = Buffer.from(headerText);
    const body = Buffer.from(payload);
    let received = "";
    let sent = false;
    const timer = setTimeout(() => finish(new Error(`no JetStream ack for ${subject}`)), timeoutMs);
    function finish(error, ack) {
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error); else resolve(ack);
    }
    socket.on("error", finish);
    socket.on("data", (chunk) => {
      received += chunk.toString();
      if (!sent && received.includes("INFO ")) {
        sent = true;
        socket.write('CONNECT {"verbose":false,"pedantic":false,"headers":true,"lang":"node","version":"0"}\r\n');
        socket.write(`SUB ${inbox} 1\r\n`);
        socket.write(`HPUB ${subject} ${inbox} ${head.length} ${head.length + body.length}\r\n`);
        socket.write(Buffer.concat([head, body, Buffer.from("\r\n")]));
        socket.write("PING\r\n");
      }
      if (received.includes("\r\nPING\r\n")) socket.write("PONG\r\n");
      if (received.includes("-ERR")) finish(new Error(received));
      const ack = received.match(/MSG \S+ 1 +(?:\S+ +)?\d+\r\n(\{[^\r]*\})\r\n/);
      if (ack) {
        const json = JSON.parse(ack[1]);
        if (json.error) finish(new Error(JSON.stringify(json.error)));
        else finish(null, json);
      }
    });
  });
}
