//! The ceiling for reads: a trivial actix-web handler that serialises a JSON body of the same
//! size (and shape) as the service's answer, with no database behind it. Run as
//! `loadgen ceiling` in a process of its own, with actix's default worker count like the services.

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    #[arg(long)]
    pub port: u16,
    /// A sample `GET /orders/{id}` body, served at `/order`.
    #[arg(long)]
    pub order_body: String,
    /// A sample `GET /catalog/products/{id}` body, served at `/product`.
    #[arg(long)]
    pub product_body: String,
}

struct Bodies {
    order: Value,
    product: Value,
}

async fn order(bodies: web::Data<Bodies>) -> HttpResponse {
    HttpResponse::Ok().json(&bodies.order)
}

async fn product(bodies: web::Data<Bodies>) -> HttpResponse {
    HttpResponse::Ok().json(&bodies.product)
}

/// Serves until killed.
pub fn serve(args: CeilingArgs) -> anyhow::Result<()> {
    let bodies = web::Data::new(Bodies {
        order: serde_json::from_str(&args.order_body)?,
        product: serde_json::from_str(&args.product_body)?,
    });
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(bodies.clone())
                .route("/order", web::get().to(order))
                .route("/product", web::get().to(product))
        })
        .bind(("127.0.0.1", args.port))?
        .run()
        .await
    })?;
    Ok(())
}
