use uuid::Uuid;

use super::{created, given, reserved, usd};
use crate::domain::commands::ProductCommand::{
    self, ChangePrice, CreateProduct, ReserveStock, Restock,
};
use crate::domain::error::DomainError;
use crate::domain::events::{Money, PriceChanged, ProductCreated, ProductRestocked, StockReleased};
use crate::domain::product::{evolve, stream_id, ProductState, MAX_NAME_CHARS};

fn create(name: &str, price_cents: i64, stock: i64) -> ProductCommand {
    CreateProduct {
        product_id: Uuid::nil(),
        name: name.into(),
        price_cents,
        currency: "USD".into(),
        stock,
    }
}

fn create_in(currency: &str) -> ProductCommand {
    CreateProduct {
        product_id: Uuid::nil(),
        name: "a".into(),
        price_cents: 100,
        currency: currency.into(),
        stock: 1,
    }
}

#[test]
fn creating_a_product_trims_its_name() {
    let id = Uuid::new_v4();
    let command = CreateProduct {
        product_id: id,
        name: "  Widget \n".into(),
        price_cents: 1999,
        currency: "EUR".into(),
        stock: 0,
    };
    let expected = ProductCreated {
        product_id: id,
        name: "Widget".into(),
        price: Money {
            amount_minor: 1999,
            currency: "EUR".into(),
        },
        initial_stock: 0,
    };
    assert_eq!(given(&[]).when(command), Ok(vec![expected.into()]));
}

#[test]
fn bad_product_input_is_refused_with_a_precise_error() {
    let long = "x".repeat(MAX_NAME_CHARS + 1);
    let cases = [
        (create("", 100, 1), DomainError::EmptyName),
        (create("   ", 100, 1), DomainError::EmptyName),
        (
            create(&long, 100, 1),
            DomainError::NameTooLong { len: 201, max: 200 },
        ),
        (
            create("a", 0, 1),
            DomainError::InvalidPrice { price_cents: 0 },
        ),
        (
            create("a", -5, 1),
            DomainError::InvalidPrice { price_cents: -5 },
        ),
        (
            create("a", 100, -1),
            DomainError::InvalidQuantity { quantity: -1 },
        ),
        (
            create_in("usd"),
            DomainError::InvalidCurrency {
                currency: "usd".into(),
            },
        ),
        (
            create_in("USDX"),
            DomainError::InvalidCurrency {
                currency: "USDX".into(),
            },
        ),
    ];
    for (command, error) in cases {
        assert_eq!(given(&[]).when(command.clone()), Err(error), "{command:?}");
    }
}

#[test]
fn a_name_of_exactly_the_limit_in_characters_is_accepted() {
    let name = "é".repeat(MAX_NAME_CHARS);
    assert!(given(&[]).when(create(&name, 1, 0)).is_ok());
}

#[test]
fn creating_an_existing_product_is_refused() {
    let id = Uuid::new_v4();
    let command = CreateProduct {
        product_id: id,
        name: "Widget".into(),
        price_cents: 100,
        currency: "USD".into(),
        stock: 1,
    };
    let result = given(&[created(id, 100, 1)]).when(command);
    assert_eq!(result, Err(DomainError::AlreadyExists { product_id: id }));
}

#[test]
fn commands_on_a_missing_product_are_refused() {
    let order_id = Uuid::new_v4();
    let commands = [
        ChangePrice { price_cents: 5 },
        Restock { quantity: 5 },
        ReserveStock {
            order_id,
            quantity: 1,
        },
    ];
    for command in commands {
        assert_eq!(given(&[]).when(command), Err(DomainError::ProductNotFound));
    }
}

#[test]
fn changing_the_price_records_old_and_new_price() {
    let id = Uuid::new_v4();
    let expected = PriceChanged {
        product_id: id,
        old_price: usd(100),
        price: usd(250),
    };
    let result = given(&[created(id, 100, 0)]).when(ChangePrice { price_cents: 250 });
    assert_eq!(result, Ok(vec![expected.into()]));
}

#[test]
fn setting_the_same_price_changes_nothing() {
    let id = Uuid::new_v4();
    let result = given(&[created(id, 100, 0)]).when(ChangePrice { price_cents: 100 });
    assert_eq!(result, Ok(vec![]));
}

#[test]
fn a_non_positive_price_change_is_refused() {
    let id = Uuid::new_v4();
    for price_cents in [0, -1] {
        let result = given(&[created(id, 100, 0)]).when(ChangePrice { price_cents });
        assert_eq!(result, Err(DomainError::InvalidPrice { price_cents }));
    }
}

#[test]
fn restocking_adds_stock() {
    let id = Uuid::new_v4();
    let history = [created(id, 100, 2)];
    let expected = ProductRestocked {
        product_id: id,
        quantity: 5,
    };
    assert_eq!(
        given(&history).when(Restock { quantity: 5 }),
        Ok(vec![expected.clone().into()])
    );
    let state = evolve(given(&history).0, &expected.into());
    assert_eq!(state.stock_available, 7);
}

#[test]
fn restocking_a_non_positive_quantity_is_refused() {
    let id = Uuid::new_v4();
    for quantity in [0, -3] {
        let result = given(&[created(id, 100, 2)]).when(Restock { quantity });
        assert_eq!(result, Err(DomainError::InvalidQuantity { quantity }));
    }
}

#[test]
fn restocking_beyond_the_integer_range_is_refused() {
    let id = Uuid::new_v4();
    let result = given(&[created(id, 100, i64::MAX)]).when(Restock { quantity: 1 });
    assert_eq!(result, Err(DomainError::StockOverflow { product_id: id }));
}

#[test]
fn reserving_moves_stock_from_available_to_reserved() {
    let (id, order) = (Uuid::new_v4(), Uuid::new_v4());
    let command = ReserveStock {
        order_id: order,
        quantity: 3,
    };
    let result = given(&[created(id, 100, 3)]).when(command);
    assert_eq!(result, Ok(vec![reserved(id, order, 3)]));

    let state = given(&[created(id, 100, 3), reserved(id, order, 3)]).0;
    assert_eq!((state.stock_available, state.stock_reserved), (0, 3));
}

#[test]
fn reserving_beyond_stock_is_refused_naming_the_product() {
    let (id, order) = (Uuid::new_v4(), Uuid::new_v4());
    let command = ReserveStock {
        order_id: order,
        quantity: 4,
    };
    let result = given(&[created(id, 100, 5), reserved(id, Uuid::new_v4(), 2)]).when(command);
    let expected = DomainError::InsufficientStock {
        product_id: id,
        requested: 4,
        available: 3,
    };
    assert_eq!(result, Err(expected));
}

#[test]
fn reserving_a_non_positive_quantity_is_refused() {
    let id = Uuid::new_v4();
    for quantity in [0, -1] {
        let command = ReserveStock {
            order_id: Uuid::new_v4(),
            quantity,
        };
        let result = given(&[created(id, 100, 5)]).when(command);
        assert_eq!(result, Err(DomainError::InvalidQuantity { quantity }));
    }
}

#[test]
fn releasing_gives_the_quantity_back_from_reserved_to_available() {
    let (id, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let history = [created(id, 100, 10), reserved(id, a, 3), reserved(id, b, 2)];
    let released = StockReleased {
        product_id: id,
        order_id: a,
        quantity: 3,
    };
    let state = evolve(given(&history).0, &released.into());
    assert_eq!((state.stock_available, state.stock_reserved), (8, 2));
}

#[test]
fn a_product_folds_from_its_events() {
    let id = Uuid::new_v4();
    let state = given(&[
        created(id, 100, 1),
        PriceChanged {
            product_id: id,
            old_price: usd(100),
            price: usd(120),
        }
        .into(),
    ])
    .0;
    let expected = ProductState {
        exists: true,
        product_id: id,
        name: "Widget".into(),
        price_cents: 120,
        currency: "USD".into(),
        stock_available: 1,
        ..ProductState::default()
    };
    assert_eq!(state, expected);
}

#[test]
fn a_product_stream_is_named_after_its_id() {
    let id = Uuid::new_v4();
    assert_eq!(stream_id(id), format!("product-{id}"));
}
