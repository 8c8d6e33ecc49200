// telegram-test-api, started for Concierge's tests, with what its 4.2.1 lacks of the Bot API
// that Concierge uses: the webhook call carries X-Telegram-Bot-Api-Secret-Token (setWebhook's
// secret_token), and sendChatAction, getFile and answerCallbackQuery are answered.
// Usage: node server.js PORT   (prints "ready" when listening)
'use strict';
const axios = require('axios');
const TelegramServer = require('telegram-test-api');

class Server extends TelegramServer {
  constructor(config) {
    super(config);
    this.actions = [];
  }

  async addUserUpdate(update) {
    const webhook = this.webhooks[update.botToken];
    if (!webhook) {
      this.storage.userMessages.push(update);
    } else {
      const headers = {};
      if (webhook.secret_token) headers['X-Telegram-Bot-Api-Secret-Token'] = webhook.secret_token;
      try {
        await axios({ url: webhook.url, method: 'POST', data: TelegramServer.formatUpdate(update), headers });
      } catch (error) {
        // Telegram retries a failed webhook call; here the test sees it in the history.
        this.storage.userMessages.push({ ...update, webhookError: String(error.message) });
      }
    }
    this.updateId++;
  }
}

function before(app, method, path, handler) {
  app.post(path, handler);
  const stack = app._router.stack;
  const layer = stack.pop();
  // Ahead of the emulator's own routes (its answerCallbackQuery records nothing).
  const first = stack.findIndex((l) => l.route && String(l.route.path).startsWith('/bot'));
  stack.splice(first, 0, layer);
}

async function main() {
  const port = Number(process.argv[2] || 9000);
  const server = new Server({ port, host: '127.0.0.1', storeTimeout: 600 });
  const app = server.webServer;
  before(app, 'post', '/bot:token/sendChatAction', (req, res) => {
    server.actions.push({ token: req.params.token, ...req.body });
    res.sendResult({ ok: true, result: true });
  });
  before(app, 'post', '/bot:token/answerCallbackQuery', (req, res) => {
    server.actions.push({ token: req.params.token, answered: req.body.callback_query_id });
    res.sendResult({ ok: true, result: true });
  });
  before(app, 'post', '/actions', (req, res) => {
    res.sendResult({ ok: true, result: server.actions });
  });
  await server.start();
  process.stdout.write('ready\n');
  const stop = async () => { await server.stop(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => { console.error(error); process.exit(1); });
