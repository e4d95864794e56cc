//! Sign-in through a legacy Azure DevOps OAuth app (App ID + client secret, the Assertion
//! flow): starting it, with the daemon's own `https://localhost` callback or a pasted address,
//! and finishing it. The account it connects is recorded like a person's (`signin.rs`).

use super::*;

impl Broker {
    /// Starts a sign-in through a legacy Azure DevOps OAuth app (the Assertion flow): the
    /// daemon serves an `https://localhost` callback itself, or the person pastes the address
    /// the browser was sent to.
    pub(super) async fn app_login_start(
        self: &Arc<Self>,
        org: String,
        host: String,
        app: AppLogin,
        timeout: Duration,
    ) -> Response {
        let AppLogin {
            app_id,
            client_secret,
            callback,
            scope,
            paste,
        } = app;
        if app_id.trim().is_empty() || client_secret.expose().trim().is_empty() {
            return err(
                ErrorKind::BadRequest,
                "a legacy OAuth app needs its App ID and client secret",
            );
        }
        if !url::Url::parse(&callback).is_ok_and(|u| u.scheme() == "https") {
            return err(
                ErrorKind::BadRequest,
                format!(
                    "the callback URL must be https, exactly as registered for app {app_id} (got '{callback}')"
                ),
            );
        }
        let scope = if scope.trim().is_empty() {
            crate::config::DEFAULT_APP_SCOPE.to_string()
        } else {
            scope
        };
        let mut certificate = None;
        let listener = match legacy::loopback_callback(&callback).filter(|_| !paste) {
            Some((port, path)) => {
                let (tls, cert) = match legacy::callback_tls(&self.data_dir) {
                    Ok(t) => t,
                    Err(e) => return err(ErrorKind::Internal, e.to_string()),
                };
                let listener = match loopback::bind_port(port).await {
                    Ok(l) => l,
                    Err(e) => {
                        return err(
                            ErrorKind::Internal,
                            format!(
                                "cannot listen on localhost:{port} (127.0.0.1 and ::1) for the callback {callback}: {e}; free the port, or use --paste"
                            ),
                        );
                    }
                };
                certificate = Some(cert.display().to_string());
                let tls = Some(tokio_rustls::TlsAcceptor::from(tls));
                Some((listener, loopback::Endpoint { path, tls }))
            }
            None => None,
        };
        let state = random_id();
        let url = self.vssps.authorize_url(&app_id, &state, &scope, &callback);
        let flow = random_id();
        let (tx, rx) = watch::channel(None);
        let finish = self.clone().publisher(flow.clone(), tx);
        let (paste_tx, mut pasted) = mpsc::channel::<Redirect>(1);
        let listening = listener.is_some();
        let app = legacy::App {
            app_id,
            secret: client_secret,
            callback: callback.clone(),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut outcome = None;
            let complete = |r| this.complete_app(&org, &host, &app, &scope, &state, r);
            let done = match listener {
                Some((listener, endpoint)) => {
                    loopback::wait_for_redirect(listener, endpoint, timeout, &state, |r| async {
                        let (result, page) = complete(r).await;
                        outcome = Some(result);
                        page
                    })
                    .await
                }
                None => match tokio::time::timeout(timeout, pasted.recv()).await {
                    Ok(Some(r)) => {
                        outcome = Some(complete(r).await.0);
                        Some(())
                    }
                    _ => None,
                },
            };
            let outcome = match (done, outcome) {
                (Some(()), Some(o)) => o,
                _ => Err((
                    ErrorKind::LoginFailed,
                    format!(
                        "the app was not authorized within {} seconds; run login again",
                        timeout.as_secs()
                    ),
                )),
            };
            finish(outcome).await;
        });
        if !listening {
            self.pastes.lock().unwrap().insert(flow.clone(), paste_tx);
        }
        self.flows.lock().unwrap().insert(flow.clone(), rx);
        Response::AppSignIn {
            flow,
            url,
            callback,
            listening,
            certificate,
            expires_in: timeout.as_secs(),
        }
    }

    /// Checks a legacy app's callback, redeems its code, and says what happened on the page.
    pub(super) async fn complete_app(
        self: &Arc<Self>,
        org: &str,
        host: &str,
        app: &legacy::App,
        scope: &str,
        state: &str,
        r: Redirect,
    ) -> (FlowOutcome, loopback::Page) {
        let code = match redirect_code(r, state, "Azure DevOps") {
            Ok(c) => c,
            Err(e) => return failed_page(e.to_string()),
        };
        let set = match self.vssps.redeem(app, &code).await {
            Ok(set) => set,
            Err(e) => return failed_page(e.to_string()),
        };
        let record = AppRecord {
            app_id: app.app_id.clone(),
            callback: app.callback.clone(),
            scope: scope.to_string(),
        };
        let result = self
            .finish_login(org, host, "", set, Some((record, app.secret.clone())))
            .await;
        outcome_page(result, &format!(" through app {}", app.app_id))
    }

    /// A legacy-app sign-in's redirected address, pasted by the person.
    pub async fn login_redirect(self: &Arc<Self>, flow: &str, url: &Secret) -> Response {
        let redirect = match loopback::parse_url(url.expose()) {
            Some(r) if r.code.is_some() || r.error.is_some() => r,
            _ => {
                return err(
                    ErrorKind::BadRequest,
                    "that is not the address the browser was sent to: paste the whole address from the address bar (it starts with https:// and contains code=)",
                );
            }
        };
        let sender = self.pastes.lock().unwrap().get(flow).cloned();
        let Some(sender) = sender else {
            return err(
                ErrorKind::BadRequest,
                "no sign-in is waiting for an address (it may have expired); run login again",
            );
        };
        if sender.send(redirect).await.is_err() {
            return err(ErrorKind::BadRequest, "this sign-in is already over");
        }
        self.login_wait(flow).await
    }

    pub async fn login_wait(self: &Arc<Self>, flow: &str) -> Response {
        let rx = self.flows.lock().unwrap().get(flow).cloned();
        let Some(mut rx) = rx else {
            return err(
                ErrorKind::BadRequest,
                "no such sign-in in progress (it may have expired)",
            );
        };
        let result = match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().expect("waited for Some"),
            Err(_) => {
                return err(
                    ErrorKind::Internal,
                    "the sign-in task ended without a result",
                );
            }
        };
        match result {
            Ok((org, account)) => Response::LoggedIn {
                org,
                account,
                store: self.store_for_sign_in(),
            },
            Err((kind, message)) => err(kind, message),
        }
    }
}
